"""Segmentation metrics: Dice per case and global (LiTS), HD95 in mm, volume similarity.

Definitions follow MONAI so numbers agree with ``DiceMetric`` and
``HausdorffDistanceMetric(percentile=95)`` on the same masks (tested):

- Dice per case ``2|P∩T| / (|P|+|T|)``; when both masks are empty the case scores 1 (LiTS counts
  a correctly empty prediction as perfect; MONAI's ``ignore_empty=False`` does the same).
- Global Dice (LiTS "Dice global") pools all cases: ``2 Σ|P∩T| / Σ(|P|+|T|)``, so large tumours
  weigh more than small ones.
- HD95: surface voxels are the mask minus its erosion (6-connected, as scipy's default); the 95th
  percentile (linear interpolation) of the distances from each surface to the other, in mm from the
  voxel spacing; the larger of the two directions. ``nan`` when a mask is empty.
- Volume similarity ``1 - |V_P - V_T| / (V_P + V_T)`` (1 when both are empty).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["dice", "global_dice", "hd95_mm", "volume_similarity", "case_metrics", "summarise_cases",
           "SEGMENT_CLASSES"]

# Label values of the segmentation outputs (phantom vessels inside the liver count as liver, the
# aorta outside it as background; satellites count as tumour).
SEGMENT_CLASSES: dict[int, str] = {0: "background", 1: "liver", 2: "tumour"}


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in shape")
    return pred, truth


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty."""
    pred, truth = _pair(pred, truth)
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def global_dice(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """LiTS global Dice over ``(pred, truth)`` pairs: pooled intersections over pooled sizes."""
    inter = total = 0
    for pred, truth in pairs:
        pred, truth = _pair(pred, truth)
        inter += int((pred & truth).sum())
        total += int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * inter / total


def _surface(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    # The border outside the array counts as background, so a mask touching the edge has surface there.
    return mask & ~binary_erosion(mask)


def hd95_mm(pred: np.ndarray, truth: np.ndarray, spacing_mm: Sequence[float], percentile: float = 95.0) -> float:
    """Symmetric ``percentile`` Hausdorff distance in mm between two masks' surfaces (``nan`` if one is empty)."""
    from scipy.spatial import KDTree

    pred, truth = _pair(pred, truth)
    if not pred.any() or not truth.any():
        return float("nan")
    scale = np.asarray(spacing_mm, np.float64)
    if scale.shape != (pred.ndim,):
        raise ValueError(f"spacing_mm needs {pred.ndim} values, got {tuple(spacing_mm)}")
    points_pred = np.argwhere(_surface(pred)) * scale
    points_truth = np.argwhere(_surface(truth)) * scale
    forward = KDTree(points_truth).query(points_pred, k=1)[0]
    backward = KDTree(points_pred).query(points_truth, k=1)[0]
    return float(max(np.percentile(forward, percentile), np.percentile(backward, percentile)))


def volume_similarity(pred: np.ndarray, truth: np.ndarray) -> float:
    """``1 - |V_pred - V_truth| / (V_pred + V_truth)``; 1.0 when both are empty."""
    pred, truth = _pair(pred, truth)
    a, b = int(pred.sum()), int(truth.sum())
    return 1.0 if a + b == 0 else 1.0 - abs(a - b) / (a + b)


def case_metrics(pred_labels: np.ndarray, truth_labels: np.ndarray, spacing_mm: Sequence[float],
                 classes: Mapping[int, str] | None = None) -> dict[str, dict[str, float]]:
    """Per class (default liver = labels 1 and 2, tumour = label 2): Dice, HD95 (mm), volume similarity, volumes.

    The liver region includes the tumour (LiTS scores the liver as liver + tumour).
    """
    classes = classes or {1: "liver", 2: "tumour"}
    pred_labels, truth_labels = np.asarray(pred_labels), np.asarray(truth_labels)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    out = {}
    for value, name in classes.items():
        if name == "liver":
            pred, truth = pred_labels >= value, truth_labels >= value
        else:
            pred, truth = pred_labels == value, truth_labels == value
        out[name] = {"dice": dice(pred, truth), "hd95_mm": hd95_mm(pred, truth, spacing_mm),
                     "volume_similarity": volume_similarity(pred, truth),
                     "volume_ml_pred": float(pred.sum()) * voxel_ml, "volume_ml_truth": float(truth.sum()) * voxel_ml,
                     "intersection_voxels": int((pred & truth).sum()), "voxels_pred": int(pred.sum()),
                     "voxels_truth": int(truth.sum())}
    return out


def summarise_cases(cases: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean/median per-case Dice, median HD95, and global Dice per class from :func:`case_metrics` outputs."""
    summary = {}
    for name in cases[0] if cases else ():
        rows = [case[name] for case in cases]
        dices = np.array([r["dice"] for r in rows])
        hds = np.array([r["hd95_mm"] for r in rows], float)
        pooled_total = sum(r["voxels_pred"] + r["voxels_truth"] for r in rows)
        pooled = 1.0 if pooled_total == 0 else 2.0 * sum(r["intersection_voxels"] for r in rows) / pooled_total
        summary[name] = {"dice_per_case_mean": float(dices.mean()), "dice_per_case_median": float(np.median(dices)),
                         "dice_global": float(pooled),
                         "hd95_mm_median": float(np.nanmedian(hds)) if np.isfinite(hds).any() else float("nan"),
                         "volume_similarity_mean": float(np.mean([r["volume_similarity"] for r in rows])),
                         "cases": len(rows)}
    return summary
