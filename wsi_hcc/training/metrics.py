"""Classification metrics (scikit-learn) and their pictures (matplotlib, Agg, no pyplot state).

``classification_metrics`` gives accuracy, balanced accuracy (mean recall over the classes present
in the truth, as scikit-learn defines it), ROC AUC (binary: the second class is positive; several
classes: one-vs-rest, macro average), per-class precision/recall/F1/support/AUC, and the confusion
matrix (rows: truth, columns: prediction).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wsi_hcc.viz.evaluation import curves_figure
from wsi_hcc.viz.figures import figure_png

__all__ = ["classification_metrics", "confusion_png", "curves_png"]


def _clean(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def classification_metrics(labels: Sequence[int], probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of predictions ``argmax(probs)`` against ``labels`` (ints into ``class_names``)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(labels), len(class_names))
    k = len(class_names)
    if len(labels) == 0:
        return {"n_tiles": 0, "accuracy": None, "balanced_accuracy": None, "roc_auc": None,
                "roc_auc_note": "no tiles", "per_class": {}, "confusion_matrix": [[0] * k for _ in range(k)],
                "class_names": list(class_names)}
    predicted = probs.argmax(axis=1)
    cm = confusion_matrix(labels, predicted, labels=list(range(k)))
    support = cm.sum(axis=1)
    present = support > 0
    recall = np.divide(np.diag(cm), support, out=np.zeros(k), where=present)
    precision, _, f1, _ = precision_recall_fscore_support(labels, predicted, labels=list(range(k)),
                                                          zero_division=0)
    per_class_auc: list[float | None] = []
    for c in range(k):
        positive = labels == c
        if positive.all() or not positive.any():
            per_class_auc.append(None)
        else:
            per_class_auc.append(float(roc_auc_score(positive, probs[:, c])))
    note = None
    if k == 2:
        roc_auc = per_class_auc[1]
    elif all(a is not None for a in per_class_auc):
        roc_auc = float(np.mean(per_class_auc))  # = roc_auc_score(..., multi_class="ovr", average="macro")
    else:
        roc_auc = None
    if roc_auc is None:
        note = "undefined: the truth lacks some classes"
    result = {
        "n_tiles": int(len(labels)),
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(recall[present].mean()),
        "roc_auc": _clean(roc_auc),
        "per_class": {name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                             "support": int(support[c]), "roc_auc": per_class_auc[c]}
                      for c, name in enumerate(class_names)},
        "confusion_matrix": cm.astype(int).tolist(),
        "class_names": list(class_names),
    }
    if note:
        result["roc_auc_note"] = note
    return result


def confusion_png(matrices: dict[str, Sequence[Sequence[int]]], class_names: Sequence[str],
                  unit: str = "tiles") -> bytes:
    """One confusion-matrix panel per split: counts (of ``unit``) in the cells, colour by row (recall) fraction."""
    from matplotlib.figure import Figure

    k = len(class_names)
    n = max(1, len(matrices))
    side = max(3.2, 0.9 * k + 1.6)
    figure = Figure(figsize=(side * n, side), layout="constrained")
    axes = figure.subplots(1, n, squeeze=False)[0]
    for ax, (split, matrix) in zip(axes, matrices.items()):
        cm = np.asarray(matrix, dtype=np.float64).reshape(k, k)
        rows = cm.sum(axis=1, keepdims=True)
        fraction = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        ax.imshow(fraction, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}\n{fraction[i, j]:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if fraction[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), class_names, rotation=30, ha="right")
        ax.set_yticks(range(k), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{split} ({int(cm.sum())} {unit})")
    return figure_png(figure)


def curves_png(history: Sequence[dict[str, Any]], monitor: str, best_epoch: int | None = None) -> bytes:
    """Loss (train and validation), validation metrics and learning rate per epoch (whole-number epoch ticks)."""
    def series(key):
        return [np.nan if h.get(key) is None else h[key] for h in history]

    panels = {"loss": {"train": series("train_loss"), "validation": series("val_loss")},
              "validation": {label: series(key) for key, label in (("val_accuracy", "accuracy"), (
                  "val_balanced_accuracy", "balanced accuracy"), ("val_auc", "ROC AUC"))},
              "learning rate": {"learning rate": series("lr")}}
    best = None if best_epoch is None else best_epoch + 1
    figure = curves_figure([h["epoch"] + 1 for h in history], panels, best, f"best ({monitor})",
                           log_scale=["learning rate"])
    figure.axes[1].set_ylim(0, 1.02)
    return figure_png(figure)
