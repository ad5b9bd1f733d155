"""Region features: first-order statistics, GLCM texture (scikit-image) and habitats (k-means across phases).

Texture is computed on fixed-width grey-level bins (``bin_width`` in HU or normalised units) so
values are comparable between patients, as IBSI recommends for CT; 2D GLCMs of every axial slice
of the region are summed (the "2.5D merged" aggregation), so thick slices are never mixed with
in-plane neighbours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["first_order_features", "glcm_features", "habitats", "region_features", "GLCM_PROPERTIES"]

GLCM_PROPERTIES = ("contrast", "dissimilarity", "homogeneity", "ASM", "energy", "correlation", "entropy")
_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def first_order_features(values: np.ndarray, voxel_volume_ml: float | None = None, bin_width: float = 25.0) -> dict:
    """First-order statistics of a region's voxel values (1D array).

    Returns mean, sd, min, max, percentiles (10, 25, 50, 75, 90), IQR, MAD (mean absolute
    deviation), skewness, excess kurtosis, energy (mean square), histogram entropy and uniformity
    on ``bin_width`` bins, the voxel count and, with ``voxel_volume_ml``, the volume in ml. An
    empty region gives counts of zero and NaN elsewhere.
    """
    values = np.asarray(values, np.float64).ravel()
    out = {"voxels": int(values.size)}
    if voxel_volume_ml is not None:
        out["volume_ml"] = float(values.size * voxel_volume_ml)
    names = ("mean", "sd", "min", "max", "p10", "p25", "median", "p75", "p90", "iqr", "mad", "skewness",
             "kurtosis", "energy", "entropy", "uniformity")
    if values.size == 0:
        return out | {name: float("nan") for name in names}
    mean, sd = float(values.mean()), float(values.std())
    p10, p25, p50, p75, p90 = (float(v) for v in np.percentile(values, [10, 25, 50, 75, 90]))
    centred = values - mean
    skew = float((centred ** 3).mean() / sd ** 3) if sd > 0 else 0.0
    kurt = float((centred ** 4).mean() / sd ** 4 - 3) if sd > 0 else 0.0
    bins = np.floor((values - values.min()) / bin_width).astype(np.int64)
    p = np.bincount(bins) / values.size
    p = p[p > 0]
    return out | {"mean": mean, "sd": sd, "min": float(values.min()), "max": float(values.max()), "p10": p10,
                  "p25": p25, "median": p50, "p75": p75, "p90": p90, "iqr": p75 - p25,
                  "mad": float(np.abs(centred).mean()), "skewness": skew, "kurtosis": kurt,
                  "energy": float((values ** 2).mean()), "entropy": float(-(p * np.log2(p)).sum()),
                  "uniformity": float((p ** 2).sum())}


def glcm_features(array: np.ndarray, mask: np.ndarray, bin_width: float = 25.0, distances_px: Sequence[int] = (1,),
                  max_levels: int = 64) -> dict:
    """GLCM texture of the region ``mask`` in ``array`` (both ``(z, y, x)``), via ``skimage.feature``.

    Grey levels are fixed-width bins of ``bin_width`` from the region's minimum (at most
    ``max_levels``; wider bins beyond that). Each axial slice's symmetric co-occurrence matrix
    over 4 angles and ``distances_px`` counts only pairs with both voxels in the region; the
    matrices of all slices are summed, normalised, and the properties averaged over angles and
    distances. Returns NaN properties when the region has no in-plane neighbour pairs.
    """
    from skimage.feature import graycomatrix, graycoprops

    mask = np.asarray(mask, bool)
    if mask.shape != np.shape(array):
        raise ValueError(f"mask shape {mask.shape} differs from the image's {np.shape(array)}")
    nan = {name: float("nan") for name in GLCM_PROPERTIES} | {"levels": 0}
    if not mask.any():
        return nan
    values = np.asarray(array, np.float64)[mask]
    low = values.min()
    width = max(float(bin_width), (values.max() - low) / max_levels + 1e-9)
    levels = int(np.floor((values.max() - low) / width)) + 1
    # Level 0 marks voxels outside the region; its row and column are dropped before normalising.
    quantised = np.zeros(mask.shape, np.uint8 if levels < 255 else np.uint16)
    quantised[mask] = np.floor((values - low) / width).astype(np.int64) + 1
    total = np.zeros((levels + 1, levels + 1, len(distances_px), len(_ANGLES)), np.float64)
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        ys, xs = np.nonzero(mask[z])
        crop = quantised[z, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        total += graycomatrix(crop, distances=list(distances_px), angles=list(_ANGLES), levels=levels + 1,
                              symmetric=True, normed=False)
    inside = total[1:, 1:]
    sums = inside.sum(axis=(0, 1), keepdims=True)
    if np.all(sums == 0):
        return nan
    normed = np.divide(inside, sums, out=np.zeros_like(inside), where=sums > 0)
    used = sums[0, 0] > 0
    out = {}
    for name in GLCM_PROPERTIES:
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = float(np.nanmean(graycoprops(normed, name)[used]))
    return out | {"levels": levels}


def habitats(phases: Mapping[str, np.ndarray], mask: np.ndarray, n_habitats: int = 3, seed: int = 0,
             order_by: str | None = None) -> tuple[np.ndarray, list[dict]]:
    """Sub-regions of a tumour from k-means on voxel intensities across phases.

    Each phase is standardised inside the mask (so a phase with a wide HU range does not
    dominate); k-means (scikit-learn, ``n_init=10``) groups voxels by their enhancement pattern.

    Parameters
    ----------
    phases
        Name -> ``(z, y, x)`` array, all on one grid (register first).
    mask
        Bool region, e.g. the tumour.
    order_by
        Habitats are numbered 1..k by increasing mean of this phase (default: the first), so
        numbering is stable between runs and patients.

    Returns
    -------
    labels : np.ndarray
        uint8 ``(z, y, x)``: 0 outside the mask, 1..k habitats.
    summary : list of dict
        Per habitat: label, voxel fraction and mean raw intensity per phase.
    """
    from sklearn.cluster import KMeans

    mask = np.asarray(mask, bool)
    names = list(phases)
    if not names:
        raise ValueError("habitats need at least one phase")
    raw = np.stack([np.asarray(phases[name], np.float64)[mask] for name in names], axis=1)
    labels = np.zeros(mask.shape, np.uint8)
    if raw.shape[0] < n_habitats:
        raise ValueError(f"the region has {raw.shape[0]} voxels, fewer than {n_habitats} habitats")
    sd = raw.std(axis=0)
    standard = (raw - raw.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    clusters = KMeans(n_clusters=n_habitats, n_init=10, random_state=seed).fit_predict(standard)
    key = names.index(order_by) if order_by is not None else 0
    order = np.argsort([raw[clusters == k, key].mean() for k in range(n_habitats)])
    rank = np.empty(n_habitats, np.int64)
    rank[order] = np.arange(1, n_habitats + 1)
    labels[mask] = rank[clusters]
    summary = []
    for k in range(n_habitats):
        members = raw[clusters == order[k]]
        summary.append({"habitat": k + 1, "fraction": float(len(members) / len(raw)),
                        "mean": {name: float(members[:, i].mean()) for i, name in enumerate(names)}})
    return labels, summary


def region_features(phases: Mapping[str, np.ndarray], regions: Mapping[str, np.ndarray], spacing_mm: Sequence[float],
                    bin_width: float = 25.0, texture: bool = True) -> dict:
    """First-order and GLCM features of every region in every phase.

    Returns ``{region: {"volume_ml": v, phase: {"first_order": {...}, "glcm": {...}}}}``.
    """
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    out = {}
    for region, mask in regions.items():
        mask = np.asarray(mask, bool)
        entry: dict = {"volume_ml": float(mask.sum() * voxel_ml)}
        for phase, array in phases.items():
            if np.shape(array) != mask.shape:
                raise ValueError(f"phase {phase!r} has shape {np.shape(array)}, region {region!r} {mask.shape}; "
                                 "resample both onto one grid first")
            values = np.asarray(array)[mask]
            entry[phase] = {"first_order": first_order_features(values, bin_width=bin_width)}
            if texture:
                entry[phase]["glcm"] = glcm_features(array, mask, bin_width=bin_width)
        out[region] = entry
    return out
