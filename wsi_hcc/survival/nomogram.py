"""A Cox nomogram: the deep risk score with clinical covariates (lifelines), as a points table.

Each covariate's contribution ``coef * (x - x_ref)`` (``x_ref`` its least risky training value) is
scaled so that the covariate with the widest contribution spans 0-100 points; total points map to
the linear predictor and, through Breslow's baseline, to the survival probability at one time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.survival.cox import BreslowBaseline, fit_breslow
from wsi_hcc.viz.nomogram_scale import PointsScale

__all__ = ["Nomogram", "fit_nomogram", "nomogram_figure"]


@dataclass(frozen=True)
class Nomogram(PointsScale):
    """Raw-unit Cox coefficients of ``covariates`` with their training ranges and the points scale."""

    covariates: tuple[str, ...]
    coef: np.ndarray
    low: np.ndarray
    high: np.ndarray
    survival_time: float
    baseline: BreslowBaseline

    def survival(self, values: np.ndarray) -> np.ndarray:
        """(n,) predicted survival at ``survival_time``."""
        lp = np.asarray(values, dtype=np.float64) @ self.coef
        return self.baseline.survival_at(lp, [self.survival_time])[:, 0]

    def to_json(self) -> dict:
        return {"covariates": list(self.covariates), "coef": self.coef.tolist(), "low": self.low.tolist(),
                "high": self.high.tolist(), "survival_time": self.survival_time,
                "baseline_time": self.baseline.time.tolist(), "baseline_survival": self.baseline.survival.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Nomogram:
        return cls(tuple(data["covariates"]), np.asarray(data["coef"]), np.asarray(data["low"]),
                   np.asarray(data["high"]), float(data["survival_time"]),
                   BreslowBaseline(np.asarray(data["baseline_time"]), np.asarray(data["baseline_survival"])))


def fit_nomogram(values: np.ndarray, names: list[str], time: np.ndarray, event: np.ndarray,
                 survival_time: float | None = None, penalizer: float = 0.0) -> Nomogram:
    """Fit lifelines' ``CoxPHFitter`` on raw covariates ``values`` (n, k) named ``names``.

    ``survival_time`` None: the median observed time.
    """
    import pandas as pd
    from lifelines import CoxPHFitter
    from lifelines.exceptions import ConvergenceError

    values = np.asarray(values, dtype=np.float64)
    keys = [f"x{i}" for i in range(len(names))]
    frame = pd.DataFrame(values, columns=keys)
    frame["_time"], frame["_event"] = time, np.asarray(event, dtype=int)
    try:
        fitter = CoxPHFitter(penalizer=penalizer).fit(frame, duration_col="_time", event_col="_event")
    except ConvergenceError:
        raise WsiHccError(f"nomogram: the Cox model of {', '.join(names)} did not converge; drop collinear "
                          f"covariates or set cox.penalizer") from None
    coef = fitter.params_.reindex(keys).to_numpy(dtype=np.float64)
    baseline = fit_breslow(values @ coef, np.asarray(time, dtype=np.float64), np.asarray(event, dtype=bool))
    when = float(np.median(time)) if survival_time is None else float(survival_time)
    return Nomogram(tuple(names), coef, values.min(axis=0), values.max(axis=0), when, baseline)


# Width of one 7 pt character in points-scale units (0-100 across 0.72 of an 8 inch figure).
_LABEL_UNITS_PER_CHAR = 1.1


def _axis(ax, y: float, label: str, positions, tick_labels, span=None) -> None:
    positions = np.asarray(positions, dtype=np.float64)
    span = (positions.min(), positions.max()) if span is None else span
    ax.plot([min(span), max(span)], [y, y], color="black", linewidth=1)
    last = None  # (x, text) of the last label drawn: a label that would touch it is left off, its tick kept
    for x, text in sorted(zip(positions, tick_labels)):
        ax.plot([x, x], [y, y + 0.15], color="black", linewidth=1)
        if last is None or x - last[0] >= _LABEL_UNITS_PER_CHAR * (len(text) + len(last[1])) / 2 + 1:
            ax.text(x, y + 0.22, text, ha="center", va="bottom", fontsize=7)
            last = (x, text)
    ax.text(-4, y, label, ha="right", va="center", fontsize=8)


def nomogram_figure(nomogram: Nomogram, time_label: str = "time"):
    """A matplotlib ``Figure``: points scale, one axis per covariate, total points, survival probability."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    k = len(nomogram.covariates)
    rows = k + 3
    figure = Figure(figsize=(8, 0.6 * rows + 0.8), dpi=120)
    ax = figure.add_axes([0.24, 0.04, 0.72, 0.9])
    y = rows - 1
    _axis(ax, y, "Points", np.arange(0, 101, 10), [str(v) for v in range(0, 101, 10)])
    for j, name in enumerate(nomogram.covariates):
        y -= 1
        whole = float(nomogram.low[j]).is_integer() and float(nomogram.high[j]).is_integer()
        values = MaxNLocator(6, integer=whole).tick_values(nomogram.low[j], nomogram.high[j])
        values = [v for v in values if nomogram.low[j] <= v <= nomogram.high[j]] or [nomogram.low[j],
                                                                                     nomogram.high[j]]
        grid = np.tile(nomogram.reference, (len(values), 1))
        grid[:, j] = values
        points = nomogram.points(grid)[:, j]
        ends = np.tile(nomogram.reference, (2, 1))
        ends[:, j] = nomogram.low[j], nomogram.high[j]
        span = tuple(nomogram.points(ends)[:, j])
        if abs(span[1] - span[0]) < 1:
            # No range on the points scale (no effect, or one value): one tick naming the values, not a pile of them.
            low, high = f"{nomogram.low[j]:g}", f"{nomogram.high[j]:g}"
            _axis(ax, y, f"{name} (< 1 point)", [span[0]], [low if low == high else f"{low} to {high}"])
            continue
        _axis(ax, y, name, points, [f"{v:g}" for v in values], span)
    y -= 1
    max_points = float(nomogram.points(np.where(nomogram.coef >= 0, nomogram.high, nomogram.low)[None, :]).sum())
    totals = [t for t in MaxNLocator(8).tick_values(0, max_points) if 0 <= t <= max_points]
    scale = 100 / max(max_points, 1e-12)
    _axis(ax, y, "Total points", np.asarray(totals) * scale, [f"{t:g}" for t in totals])
    y -= 1
    s0 = nomogram.baseline.survival_at(np.zeros(1), [nomogram.survival_time])[0, 0]
    probabilities, positions = [], []
    for p in (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05):
        if not 0 < s0 < 1:
            break
        lp = np.log(np.log(p) / np.log(s0))
        total = (lp - float(nomogram.coef @ nomogram.reference)) / nomogram.units_per_point
        if 0 <= total <= max_points:
            probabilities.append(f"{p:g}")
            positions.append(total * scale)
    if positions:
        _axis(ax, y, f"P(survival at {nomogram.survival_time:.3g} {time_label})", positions, probabilities)
    ax.set_xlim(-2, 104)
    ax.set_ylim(y - 0.8, rows - 0.2)
    ax.axis("off")
    return figure
