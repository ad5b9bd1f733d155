"""Discrimination and calibration of risk scores on held-out patients.

Harrell's C is :func:`wsi_hcc.survival.concordance_index`; Uno's C, the time-dependent AUC
(cumulative/dynamic) and the Brier score come from torchsurv with inverse-probability-of-censoring
weights from the *training* patients' censoring distribution (Kaplan-Meier), as torchsurv advises
for train/test splits. torchsurv's metrics are computed in float32 (its weight update fails on
float64 inputs).
"""

from __future__ import annotations

import numpy as np

from wsi_hcc.survival.concordance import concordance_counts, concordance_index
from wsi_hcc.survival.losses import torchsurv_api

__all__ = ["uno_concordance", "time_dependent_auc", "integrated_brier_score", "brier_times",
           "bootstrap_ci", "evaluate_risks", "default_auc_times"]

BRIER_POINTS = 50


def _tensors(time, event):
    import torch

    return (torch.as_tensor(np.asarray(time, dtype=np.float32)),
            torch.as_tensor(np.asarray(event, dtype=bool)))


def _ipcw(train_time, train_event, at_time):
    import torch

    t, e = _tensors(train_time, train_event)
    return torchsurv_api().get_ipcw(e, t, torch.as_tensor(np.asarray(at_time, dtype=np.float32)))


def uno_concordance(time, event, risk, train_time, train_event) -> float:
    """Uno's C: Harrell's pairs weighted by 1 / G(T_i)^2, G the training censoring survival (no truncation)."""
    import torch

    t, e = _tensors(time, event)
    weight = _ipcw(train_time, train_event, time)
    estimate = torch.as_tensor(np.asarray(risk, dtype=np.float32))
    return float(torchsurv_api().ConcordanceIndex()(estimate, e, t, weight=weight))


def default_auc_times(time, event) -> list[float]:
    """Quartiles of the observed event times."""
    return [float(q) for q in np.quantile(np.asarray(time)[np.asarray(event, dtype=bool)], [0.25, 0.5, 0.75])]


def time_dependent_auc(time, event, risk, times, train_time, train_event) -> dict[str, float | None]:
    """Cumulative/dynamic AUC at each of ``times`` (None where a time is outside the follow-up or has
    no cases or no controls)."""
    import torch

    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    usable = [t for t in times if time.min() <= t < time.max() and (event & (time <= t)).any()]
    result: dict[str, float | None] = {f"{t:g}": None for t in times}
    if not usable:
        return result
    tt, e = _tensors(time, event)
    auc = torchsurv_api().Auc()(torch.as_tensor(np.asarray(risk, dtype=np.float32)), e, tt,
                                new_time=torch.as_tensor(np.asarray(usable, dtype=np.float32)),
                                weight=_ipcw(train_time, train_event, time),
                                weight_new_time=_ipcw(train_time, train_event, usable))
    for t, value in zip(usable, auc.tolist()):
        result[f"{t:g}"] = float(value)
    return result


def brier_times(time) -> np.ndarray:
    """The IBS grid: BRIER_POINTS times evenly spaced between the 10th and 90th percentile of the
    evaluated patients' times (the tails, where few remain at risk, make the Brier score noisy)."""
    low, high = np.quantile(np.asarray(time, dtype=np.float64), [0.1, 0.9])
    return np.unique(np.linspace(low, high, BRIER_POINTS))


def integrated_brier_score(time, event, survival, times, train_time, train_event) -> float | None:
    """Integrated Brier score of predicted survival ``survival`` (n, k) at ``times`` (k,)."""
    import torch

    if len(times) < 2:
        return None
    t, e = _tensors(time, event)
    metric = torchsurv_api().BrierScore()
    metric(torch.as_tensor(np.asarray(survival, dtype=np.float32)), e, t,
           new_time=torch.as_tensor(np.asarray(times, dtype=np.float32)),
           weight=_ipcw(train_time, train_event, time), weight_new_time=_ipcw(train_time, train_event, times))
    return float(metric.integral())


def bootstrap_ci(statistic, n: int, resamples: int, seed: int) -> list[float] | None:
    """Percentile 95% CI of ``statistic(rows)`` over bootstrap resamples of n patients (None if 0)."""
    if resamples == 0:
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        value = statistic(rng.integers(0, n, n))
        if value is not None and np.isfinite(value):
            values.append(value)
    if not values:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return [float(low), float(high)]


def _harrell_or_none(time, event, risk) -> float | None:
    concordant, tied, comparable = concordance_counts(time, event, risk)
    return None if comparable == 0 else (concordant + tied / 2) / comparable


def evaluate_risks(time, event, risk, train_time, train_event, *, survival_fn=None, auc_times=None,
                   bootstrap: int = 0, seed: int = 0) -> dict:
    """Metrics of risks on evaluated patients, censoring weights from the training patients.

    ``survival_fn(rows, times)`` -> (len(rows), k) predicted survival, for the integrated Brier score
    (omitted: no IBS). Bootstrap CIs resample the evaluated patients.
    """
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    risk = np.asarray(risk, dtype=np.float64)
    times = list(auc_times) if auc_times else default_auc_times(time, event)
    metrics: dict = {"n": int(time.size), "events": int(event.sum()),
                     "c_index_harrell": concordance_index(time, event, risk),
                     "c_index_uno": uno_concordance(time, event, risk, train_time, train_event),
                     "td_auc": time_dependent_auc(time, event, risk, times, train_time, train_event)}
    if survival_fn is not None:
        grid = brier_times(time)
        metrics["integrated_brier_score"] = integrated_brier_score(
            time, event, survival_fn(np.arange(time.size), grid), grid, train_time, train_event)
        metrics["brier_time_range"] = [float(grid[0]), float(grid[-1])]
    if bootstrap:
        def uno(rows):
            if not event[rows].any() or _harrell_or_none(time[rows], event[rows], risk[rows]) is None:
                return None
            return uno_concordance(time[rows], event[rows], risk[rows], train_time, train_event)

        metrics["c_index_harrell_ci95"] = bootstrap_ci(
            lambda rows: _harrell_or_none(time[rows], event[rows], risk[rows]), time.size, bootstrap, seed)
        metrics["c_index_uno_ci95"] = bootstrap_ci(uno, time.size, bootstrap, seed)
        metrics["bootstrap"] = bootstrap
    return metrics
