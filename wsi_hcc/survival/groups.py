"""Risk groups: cut-offs fitted on training risks only, then applied unchanged to any other patients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.survival.config import GroupConfig

__all__ = ["RiskCutoffs", "fit_cutoffs", "logrank", "logrank_statistics", "MAX_CANDIDATES"]

MAX_CANDIDATES = 200  # X-tile search: at most this many candidate cut-offs (risk quantiles)


@dataclass(frozen=True)
class RiskCutoffs:
    """Ascending cut-offs on the risk score and one label per group, low risk first.

    A patient with ``cutoffs[k-1] < risk <= cutoffs[k]`` is in group k (a risk equal to a cut-off
    goes to the lower group, as in Wang 2022's "<= 0.5 is low risk").
    """

    method: str
    cutoffs: tuple[float, ...]
    labels: tuple[str, ...]
    logrank_statistic: float | None = None

    def assign(self, risk: np.ndarray) -> np.ndarray:
        """Group index (int, 0 = lowest risk) of each risk."""
        return np.searchsorted(np.asarray(self.cutoffs, dtype=np.float64), np.asarray(risk, dtype=np.float64),
                               side="left")

    def label(self, risk: np.ndarray) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)[self.assign(risk)]

    def to_json(self) -> dict:
        return {"method": self.method, "cutoffs": list(self.cutoffs), "labels": list(self.labels),
                "logrank_statistic": self.logrank_statistic}

    @classmethod
    def from_json(cls, data: dict) -> RiskCutoffs:
        return cls(data["method"], tuple(float(c) for c in data["cutoffs"]), tuple(data["labels"]),
                   data.get("logrank_statistic"))


def logrank(time: np.ndarray, event: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """(test statistic, p-value) of the log-rank test across groups (lifelines)."""
    from lifelines.statistics import multivariate_logrank_test

    result = multivariate_logrank_test(time, groups, event)
    return float(result.test_statistic), float(result.p_value)


def fit_cutoffs(risk: np.ndarray, time: np.ndarray, event: np.ndarray, config: GroupConfig) -> RiskCutoffs:
    """Cut-offs from training risks (and, for ``optimal``, training outcomes) only.

    ``optimal`` is the X-tile-style search: among risk quantiles leaving at least ``min_fraction`` of
    the patients in each group, the cut-off with the largest log-rank statistic. Its log-rank p-value
    on the same patients is optimistic; judge it on held-out patients.
    """
    risk = np.asarray(risk, dtype=np.float64)
    labels = tuple(config.group_labels())
    if config.method == "fixed":
        return RiskCutoffs("fixed", (float(config.threshold),), labels)
    if config.method == "median":
        return RiskCutoffs("median", (float(np.median(risk)),), labels)
    if config.method == "tertiles":
        return RiskCutoffs("tertiles", tuple(float(q) for q in np.quantile(risk, [1 / 3, 2 / 3])), labels)
    candidates = np.unique(np.quantile(risk, np.linspace(config.min_fraction, 1 - config.min_fraction,
                                                         MAX_CANDIDATES)))
    high = risk[:, None] > candidates[None, :]
    share = high.mean(axis=0)
    allowed = (share >= config.min_fraction) & (share <= 1 - config.min_fraction)
    if not allowed.any():
        raise WsiHccError(f"optimal cut-off: no cut-off leaves {config.min_fraction:.0%} of patients in each group "
                          f"(too many tied risks); lower groups.min_fraction or use method median")
    stats = logrank_statistics(np.asarray(time, dtype=np.float64), np.asarray(event, dtype=bool), high[:, allowed])
    best = int(np.argmax(stats))
    return RiskCutoffs("optimal", (float(candidates[allowed][best]),), labels, float(stats[best]))


def logrank_statistics(time: np.ndarray, event: np.ndarray, in_group: np.ndarray) -> np.ndarray:
    """Two-group log-rank chi-square statistics for many splits at once (the X-tile search).

    ``in_group`` (n, c) bool: one column per candidate split. The statistic is lifelines' (and R's
    ``survdiff``): (observed - expected events in the group)^2 / hypergeometric variance, summed over
    the distinct event times. Vectorised because the search tries up to MAX_CANDIDATES splits.
    """
    event_times = np.unique(time[event])
    at_risk = (time[:, None] >= event_times[None, :]).astype(np.float64)  # (n, k)
    dies = ((time[:, None] == event_times[None, :]) & event[:, None]).astype(np.float64)
    group = in_group.astype(np.float64)  # (n, c)
    n_all, d_all = at_risk.sum(axis=0), dies.sum(axis=0)  # (k,)
    n_group, d_group = group.T @ at_risk, group.T @ dies  # (c, k)
    expected = n_group * d_all / n_all
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = np.where(n_all > 1, n_group * (n_all - n_group) * d_all * (n_all - d_all)
                            / (n_all ** 2 * (n_all - 1)), 0.0)
    total_variance = variance.sum(axis=1)
    difference = (d_group - expected).sum(axis=1)
    return np.where(total_variance > 0, difference ** 2 / np.where(total_variance > 0, total_variance, 1), 0.0)
