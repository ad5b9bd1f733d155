"""The classical Cox model (lifelines ``CoxPHFitter``, Efron ties) and the Breslow baseline survival
that turns any model's log hazards into survival curves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.survival.config import CoxConfig
from wsi_hcc.survival.data import Standardizer, SurvivalData

__all__ = ["CoxModel", "fit_cox", "BreslowBaseline", "fit_breslow"]


@dataclass(frozen=True)
class CoxModel:
    """A fitted linear Cox model: log hazard = standardised features @ ``coef``.

    ``coef`` (d,) is per standard deviation of each feature (the standardiser is fitted on the
    training rows); ``feature_names`` fix the column order.
    """

    standardizer: Standardizer
    coef: np.ndarray
    feature_names: tuple[str, ...]

    def log_hazard(self, features: np.ndarray) -> np.ndarray:
        return self.standardizer.transform(features) @ self.coef


def fit_cox(data: SurvivalData, config: CoxConfig = CoxConfig()) -> CoxModel:
    """Fit lifelines' ``CoxPHFitter`` on the standardised features of ``data``."""
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    standardizer = Standardizer.fit(data.features)
    names = [f"x{i}" for i in range(len(data.feature_names))]  # lifelines' formula parser dislikes some names
    frame = pd.DataFrame(standardizer.transform(data.features), columns=names)
    frame["_time"], frame["_event"] = data.time, data.event.astype(int)
    fitter = CoxPHFitter(penalizer=config.penalizer, l1_ratio=config.l1_ratio)
    try:
        fitter.fit(frame, duration_col="_time", event_col="_event")
    except ConvergenceError as exc:
        raise WsiHccError(f"Cox model did not converge ({str(exc).splitlines()[0][:120]}); drop collinear or "
                          f"constant features or set cox.penalizer (e.g. 0.1)") from None
    coef = fitter.params_.reindex(names).to_numpy(dtype=np.float64)
    return CoxModel(standardizer, coef, data.feature_names)


@dataclass(frozen=True)
class BreslowBaseline:
    """Breslow's baseline survival S0 at the training set's unique times; S(t | x) = S0(t) ** exp(log hazard).

    Fitted with the same log hazards the model gives, so it matches the model's scale.
    """

    time: np.ndarray
    survival: np.ndarray

    def survival_at(self, log_hazard: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(n, k) survival probabilities of n patients at k times (S0 is a right-continuous step function)."""
        index = np.searchsorted(self.time, np.asarray(times, dtype=np.float64), side="right") - 1
        s0 = np.where(index >= 0, self.survival[np.clip(index, 0, None)], 1.0)
        return s0[None, :] ** np.exp(np.asarray(log_hazard, dtype=np.float64))[:, None]


def fit_breslow(log_hazard: np.ndarray, time: np.ndarray, event: np.ndarray) -> BreslowBaseline:
    """The Breslow baseline survival of training log hazards (torchsurv ``baseline_survival_function``)."""
    import torch

    from wsi_hcc.survival.losses import torchsurv_api

    result = torchsurv_api().baseline_survival_function(
        torch.as_tensor(log_hazard, dtype=torch.float64), torch.as_tensor(event, dtype=torch.bool),
        torch.as_tensor(time, dtype=torch.float64))
    return BreslowBaseline(result["time"].numpy().astype(np.float64),
                           result["baseline_survival"].numpy().astype(np.float64))
