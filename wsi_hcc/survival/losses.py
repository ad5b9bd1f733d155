"""The Cox partial likelihood (torchsurv), with Efron or Breslow handling of tied event times."""

from __future__ import annotations

import warnings
from functools import lru_cache
from types import SimpleNamespace

__all__ = ["torchsurv_api", "cox_partial_nll"]


@lru_cache(maxsize=1)
def torchsurv_api() -> SimpleNamespace:
    """torchsurv's functions, imported once.

    torchsurv 0.2 decorates a validator with ``torch.jit.script``, which torch >= 2.10 deprecates
    with a FutureWarning at import; that warning says nothing about our use, so it is silenced here
    and only here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
        from torchsurv.loss.cox import baseline_survival_function, neg_partial_log_likelihood
        from torchsurv.metrics.auc import Auc
        from torchsurv.metrics.brier_score import BrierScore
        from torchsurv.metrics.cindex import ConcordanceIndex
        from torchsurv.stats.ipcw import get_ipcw
    return SimpleNamespace(neg_partial_log_likelihood=neg_partial_log_likelihood,
                           baseline_survival_function=baseline_survival_function, Auc=Auc,
                           BrierScore=BrierScore, ConcordanceIndex=ConcordanceIndex, get_ipcw=get_ipcw)


def cox_partial_nll(log_hz, event, time, ties: str = "efron", reduction: str = "mean"):
    """Negative Cox partial log-likelihood of log hazards ``log_hz`` (n,) given ``event`` (n,) bool and
    ``time`` (n,) float tensors; ``ties`` is ``efron`` or ``breslow``; ``reduction`` ``mean`` (per event
    time) or ``sum``.

    torchsurv warns on every call with tied times (normal in clinical follow-up, where times are in
    days or months), so that one warning is silenced; a batch without events is an error here rather
    than torchsurv's silent zero loss.
    """
    if not bool(event.any()):
        raise ValueError("Cox partial likelihood needs at least one event in the batch")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Ties in `time` detected", category=UserWarning)
        return torchsurv_api().neg_partial_log_likelihood(log_hz, event, time, ties_method=ties,
                                                          reduction=reduction)
