"""Evaluation pictures as matplotlib ``Figure`` objects built from arrays: ROC curves, reliability
diagrams and training curves (callers turn them into PNG bytes with ``figure_png``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["roc_figure", "reliability_figure", "curves_figure"]


def roc_figure(curves: dict[str, tuple[Sequence[int], Sequence[float]]], title: str = "ROC"):
    """ROC curves (``{name: (labels, positive scores)}``) on one plot, AUC in the legend; ``title`` says
    which slides were scored (cross-validation folds, a held-out test set, ...). A curve named
    ``pooled`` is drawn thicker; curves lacking a class are left out."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    figure = Figure(figsize=(4.8, 4.6), layout="constrained")
    ax = figure.subplots()
    for name, (labels, scores) in curves.items():
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=2 if name == "pooled" else 1, label=f"{name} (AUC {roc_auc_score(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlim(-0.02, 1.02)  # a margin: a perfect curve runs along the axes, and would hide under the frame
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title, fontsize=10, wrap=True)
    ax.legend(fontsize=7, loc="lower right")
    return figure


def reliability_figure(accuracy: np.ndarray, confidence: np.ndarray, count: np.ndarray, title: str):
    """Reliability diagram from per-bin ``accuracy``, mean ``confidence`` and slide ``count`` (equal-width
    bins over [0, 1]): bars of accuracy, dots of mean confidence, the count above each bar. The axes
    leave room above 1 so no count or dot is cut at the frame."""
    from matplotlib.figure import Figure

    accuracy, confidence, count = (np.asarray(a) for a in (accuracy, confidence, count))
    bins = len(count)
    centres = (np.arange(bins) + 0.5) / bins
    filled = count > 0
    figure = Figure(figsize=(4.8, 4.6), layout="constrained")
    ax = figure.subplots()
    ax.bar(centres, np.where(filled, accuracy, 0), width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.plot(confidence[filled], accuracy[filled], "o", color="C3", label="mean confidence", clip_on=False, zorder=3)
    for c, a, k in zip(centres[filled], accuracy[filled], count[filled]):
        ax.annotate(f"n={int(k)}", (c, a), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.12)  # room for the counts above a bar of accuracy 1
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return figure


def curves_figure(epochs: Sequence[int], series: dict[str, dict[str, Sequence[float]]],
                  best_epoch: int | None = None, best_label: str = "best", log_scale: Sequence[str] = ()):
    """Training curves: one panel per ``series`` key (its title), one line per inner key, against
    ``epochs`` (1-based) with whole-number ticks only; a dotted line marks ``best_epoch`` (1-based)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(4 * len(series), 3.6), layout="constrained")
    axes = figure.subplots(1, len(series), squeeze=False)[0]
    style = "o-" if len(epochs) <= 20 else "-"  # dots on a long run would merge into a thick line
    for ax, (panel, lines) in zip(axes, series.items()):
        for label, values in lines.items():
            ax.plot(epochs, values, style, label=label)
        if panel in log_scale:
            ax.set_yscale("log")
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=best_label)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    return figure
