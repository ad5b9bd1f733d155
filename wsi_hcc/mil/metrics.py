"""Slide-level evaluation: AUC with a bootstrap CI, thresholded sensitivity/specificity, kappa,
calibration (ECE, reliability diagram), temperature scaling, and the pictures.

Every number comes from scikit-learn where scikit-learn has it (``roc_auc_score``,
``balanced_accuracy_score``, ``confusion_matrix``, ``recall_score``, ``cohen_kappa_score``) or is a
documented formula on the same arrays (ECE). Argmax-view metrics reuse
``wsi_hcc.training.metrics.classification_metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wsi_hcc.training.metrics import classification_metrics
from wsi_hcc.viz.evaluation import reliability_figure, roc_figure
from wsi_hcc.viz.figures import figure_png

__all__ = ["bootstrap_auc", "youden_threshold", "binary_metrics", "grade_metrics", "expected_calibration_error",
           "reliability_bins", "fit_temperature", "softmax", "roc_png", "reliability_png"]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _auc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney U with mid-ranks for ties: the same number as
    ``sklearn.metrics.roc_auc_score``); NaN for rows with one class only."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n_pos = labels.sum(axis=1)
    n_neg = labels.shape[1] - n_pos
    u = (ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_pos > 0) & (n_neg > 0), u / (n_pos * n_neg), np.nan)


def bootstrap_auc(labels: Sequence[int], scores: Sequence[float], n: int = 1000, seed: int = 0,
                  level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of ROC AUC over slides (resamples lacking a class are left out)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if len(np.unique(labels)) < 2 or n <= 0:
        return None, None
    idx = np.random.default_rng(seed).integers(0, len(labels), (n, len(labels)))
    values = _auc_rows((labels[idx] == 1).astype(np.float64), scores[idx])
    values = values[~np.isnan(values)]
    if not len(values):
        return None, None
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def youden_threshold(labels: Sequence[int], scores: Sequence[float]) -> float:
    """The score threshold maximising sensitivity + specificity - 1 on sklearn's ROC points, placed midway
    between the score at that point and the next lower score (not on a validation slide's own score, which
    would make the decision brittle for confident models); 0.5 if undefined."""
    from sklearn.metrics import roc_curve

    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    upper = min(1.0, float(thresholds[best]))
    lower = float(thresholds[best + 1]) if best + 1 < len(thresholds) else 0.0
    return (upper + lower) / 2


def expected_calibration_error(labels: Sequence[int], probs: np.ndarray, bins: int = 10) -> float:
    """Top-label ECE: sum over equal-width confidence bins of |accuracy - mean confidence| * bin share."""
    acc, conf, count = reliability_bins(labels, probs, bins)
    total = count.sum()
    if total == 0:
        return float("nan")
    filled = count > 0
    return float(np.sum(np.abs(acc[filled] - conf[filled]) * count[filled]) / total)


def reliability_bins(labels: Sequence[int], probs: np.ndarray, bins: int = 10):
    """Per equal-width top-label confidence bin: accuracy, mean confidence, count (bins right-closed)."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(labels), -1)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    acc, conf, count = np.zeros(bins), np.zeros(bins), np.zeros(bins, dtype=np.int64)
    for b in range(bins):
        members = which == b
        count[b] = members.sum()
        if count[b]:
            acc[b] = (predicted[members] == labels[members]).mean()
            conf[b] = confidence[members].mean()
    return acc, conf, count


def fit_temperature(logits: np.ndarray, labels: Sequence[int]) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` (LBFGS on log T)."""
    import torch

    x = torch.as_tensor(np.asarray(logits, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    if len(y) == 0:
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(np.clip(log_t.exp().item(), 0.05, 20.0))


def binary_metrics(labels: Sequence[int], probs: np.ndarray, threshold, class_names: Sequence[str],
                   bootstrap: int = 1000, seed: int = 0, bins: int = 10) -> dict[str, Any]:
    """Metrics of ``P(positive) = probs[:, 1]`` against ``labels`` at ``threshold`` (predict positive at >=).

    ``threshold`` is one number, or one per slide (pooled folds, each with its own threshold)."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, recall_score, roc_auc_score

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(labels), 2)
    scores = probs[:, 1]
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), scores.shape)
    predicted = (scores >= thresholds).astype(np.int64)
    both = len(np.unique(labels)) == 2
    low, high = bootstrap_auc(labels, scores, bootstrap, seed)
    return {
        "n_slides": int(len(labels)),
        "threshold": float(threshold) if np.ndim(threshold) == 0 else "per fold",
        "roc_auc": float(roc_auc_score(labels, scores)) if both else None,
        "roc_auc_ci95": [low, high],
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)) if len(labels) else None,
        "sensitivity": float(recall_score(labels, predicted, pos_label=1, zero_division=0)) if (labels == 1).any()
        else None,
        "specificity": float(recall_score(labels, predicted, pos_label=0, zero_division=0)) if (labels == 0).any()
        else None,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=[0, 1]).astype(int).tolist(),
        "ece": expected_calibration_error(labels, probs, bins) if len(labels) else None,
        "argmax": classification_metrics(labels, probs, class_names),
        "class_names": list(class_names),
    }


def grade_metrics(labels: Sequence[int], probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Grade (ordinal classes in ``class_names`` order): quadratic-weighted kappa of the argmax, plus
    balanced accuracy, one-vs-rest AUC and confusion matrix. Slides without a grade (-1) are left out."""
    from sklearn.metrics import cohen_kappa_score

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64).reshape(len(labels), len(class_names))
    keep = labels >= 0
    labels, probs = labels[keep], probs[keep]
    result = classification_metrics(labels, probs, class_names)
    predicted = probs.argmax(axis=1) if len(labels) else np.zeros(0, np.int64)
    kappa = None
    if len(labels) and len(np.unique(np.concatenate([labels, predicted]))) > 1:
        kappa = float(cohen_kappa_score(labels, predicted, weights="quadratic", labels=list(range(len(class_names)))))
    result["quadratic_weighted_kappa"] = kappa
    result["n_slides"] = int(len(labels))
    return result


def roc_png(curves: dict[str, tuple[Sequence[int], Sequence[float]]], title: str = "ROC") -> bytes:
    """ROC curves (``{name: (labels, positive scores)}``) on one plot, AUC in the legend; ``title`` says
    which slides were scored."""
    return figure_png(roc_figure(curves, title))


def reliability_png(labels: Sequence[int], probs: np.ndarray, bins: int = 10, title: str = "pooled") -> bytes:
    """Reliability diagram: accuracy against mean confidence per bin, with the slide count per bin."""
    acc, conf, count = reliability_bins(labels, probs, bins)
    ece = expected_calibration_error(labels, probs, bins)
    return figure_png(reliability_figure(acc, conf, count, f"reliability, {title} (ECE {ece:.3f})"))
