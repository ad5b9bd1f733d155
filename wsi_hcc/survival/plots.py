"""Kaplan-Meier curves per risk group with numbers at risk and the log-rank p-value (lifelines estimates,
a matplotlib ``Figure``; callers turn it into PNG bytes with ``wsi_hcc.viz.figures.figure_png``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.survival.groups import logrank

__all__ = ["KmSummary", "km_summary", "km_figure"]

_TICKS = 6


@dataclass(frozen=True)
class KmSummary:
    """Groups (in plotting order), their sizes, events and median survival (None if not reached),
    and the log-rank test across groups."""

    groups: tuple[str, ...]
    n: tuple[int, ...]
    events: tuple[int, ...]
    median_time: tuple[float | None, ...]
    logrank_statistic: float
    logrank_p: float

    def to_json(self) -> dict:
        return {"groups": list(self.groups), "n": list(self.n), "events": list(self.events),
                "median_time": list(self.median_time), "logrank_statistic": self.logrank_statistic,
                "logrank_p": self.logrank_p}


def _order(groups: np.ndarray, order) -> list[str]:
    present = list(dict.fromkeys(sorted(map(str, groups))))
    if order is None:
        return present
    return [g for g in map(str, order) if g in present] + [g for g in present if g not in map(str, order)]


def _fitters(time, event, groups, order):
    from lifelines import KaplanMeierFitter

    fitters = []
    for name in order:
        rows = groups == name
        fitters.append(KaplanMeierFitter(label=name).fit(time[rows], event[rows]))
    return fitters


def km_summary(time, event, groups, order=None) -> KmSummary:
    """Per-group counts and medians and the log-rank test (at least two groups)."""
    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    groups = np.asarray(groups).astype(str)
    names = _order(groups, order)
    if len(names) < 2:
        raise WsiHccError(f"Kaplan-Meier by group: only one group ({names[0] if names else 'none'}); a log-rank "
                          f"test needs at least two")
    fitters = _fitters(time, event, groups, names)
    stat, p = logrank(time, event, groups)
    medians = tuple(None if not np.isfinite(f.median_survival_time_) else float(f.median_survival_time_)
                    for f in fitters)
    return KmSummary(tuple(names), tuple(int((groups == g).sum()) for g in names),
                     tuple(int(event[groups == g].sum()) for g in names), medians, stat, p)


def km_figure(time, event, groups, order=None, time_label: str = "time", title: str | None = None):
    """(Figure, KmSummary): step curves with 95% bands, censoring ticks, numbers at risk beneath, log-rank p."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    time = np.asarray(time, dtype=np.float64)
    event = np.asarray(event, dtype=bool)
    groups = np.asarray(groups).astype(str)
    summary = km_summary(time, event, groups, order)
    fitters = _fitters(time, event, groups, summary.groups)
    figure = Figure(figsize=(6.4, 4.2 + 0.22 * len(summary.groups)), dpi=120)
    grid = figure.add_gridspec(2, 1, height_ratios=[4, 0.5 + 0.3 * len(summary.groups)], hspace=0.45, left=0.16,
                               right=0.96)
    ax, table = figure.add_subplot(grid[0]), figure.add_subplot(grid[1])
    ticks = [t for t in MaxNLocator(_TICKS).tick_values(0, time.max()) if 0 <= t <= time.max()]
    for index, (name, fitter) in enumerate(zip(summary.groups, fitters)):
        colour = f"C{index}"
        curve = fitter.survival_function_.iloc[:, 0]
        band = fitter.confidence_interval_survival_function_
        ax.step(curve.index, curve.to_numpy(), where="post", color=colour,
                label=f"{name} (n={summary.n[index]}, events={summary.events[index]})")
        ax.fill_between(band.index, band.iloc[:, 0], band.iloc[:, 1], step="post", color=colour, alpha=0.15,
                        linewidth=0)
        censored = time[(groups == name) & ~event]
        ax.plot(censored, fitter.predict(censored).to_numpy() if censored.size else [], "|", color=colour,
                markersize=6)
        at_risk = [(time[groups == name] >= t).sum() for t in ticks]
        for t, count in zip(ticks, at_risk):
            table.text(t, len(summary.groups) - 1 - index, str(count), ha="center", va="center", color=colour,
                       fontsize=8)
    p_text = "p < 0.0001" if summary.logrank_p < 1e-4 else f"p = {summary.logrank_p:.4f}"
    ax.text(0.98, 0.04, f"log-rank {p_text}", transform=ax.transAxes, fontsize=9, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, time.max() * 1.02)
    ax.set_xticks(ticks)
    ax.set_ylabel("survival probability")
    ax.set_xlabel(time_label)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    table.set_xlim(ax.get_xlim())
    table.set_ylim(-0.5, len(summary.groups) - 0.5)
    table.set_yticks(range(len(summary.groups)), list(reversed(summary.groups)), fontsize=8)
    table.set_xticks([])
    table.tick_params(axis="y", length=0, pad=16)
    table.set_title("number at risk", fontsize=8, loc="left")
    for side in ("top", "right", "bottom", "left"):
        table.spines[side].set_visible(False)
    return figure, summary
