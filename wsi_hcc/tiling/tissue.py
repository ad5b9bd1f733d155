"""Tissue detection on a low-resolution thumbnail: saturation, Otsu, morphological clean-up."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TissueParams", "detect_tissue"]


@dataclass(frozen=True)
class TissueParams:
    """How tissue is told from glass.

    Attributes
    ----------
    thumbnail_mpp : float
        Resolution the mask is computed at (coarser is faster; 8 um/px resolves 50 um objects).
    saturation_threshold : float or None
        Fixed HSV-saturation threshold in [0, 1]; None picks one per slide with Otsu.
    min_saturation : float
        Floor for the Otsu threshold, so a slide of bare glass is not split in two by noise.
    max_value : float
        Pixels brighter than this (HSV value, [0, 1]) with low saturation are glass.
    closing_um, min_object_um2, min_hole_um2 : float
        Clean-up sizes in microns: close gaps, drop specks, fill holes.
    """

    thumbnail_mpp: float = 8.0
    saturation_threshold: float | None = None
    min_saturation: float = 0.05
    max_value: float = 0.95
    closing_um: float = 32.0
    min_object_um2: float = 20_000.0
    min_hole_um2: float = 10_000.0

    def __post_init__(self):
        # Bounds keep a typo from turning tissue detection into minutes of work on a huge mask.
        checks = [("thumbnail_mpp", self.thumbnail_mpp, 0.5, 256.0), ("min_saturation", self.min_saturation, 0, 1),
                  ("max_value", self.max_value, 0, 1), ("closing_um", self.closing_um, 0, 10_000),
                  ("min_object_um2", self.min_object_um2, 0, 1e10), ("min_hole_um2", self.min_hole_um2, 0, 1e10)]
        if self.saturation_threshold is not None:
            checks.append(("saturation_threshold", self.saturation_threshold, 0, 1))
        for name, value, low, high in checks:
            if not low <= value <= high:  # NaN fails too
                raise ValueError(f"tissue.{name} must be between {low:g} and {high:g}, not {value!r}")


def detect_tissue(thumbnail: np.ndarray, thumbnail_mpp: float, params: TissueParams = TissueParams()) -> np.ndarray:
    """Boolean tissue mask of a thumbnail.

    Parameters
    ----------
    thumbnail : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.
    thumbnail_mpp : float
        Microns per thumbnail pixel, to convert the clean-up sizes.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` bool, True on tissue.
    """
    from skimage import filters, morphology

    if thumbnail.size == 0:
        return np.zeros(thumbnail.shape[:2], dtype=bool)
    # Channel-wise maximum/minimum of uint8 planes: far faster than reducing over a size-3 axis.
    red, green, blue = thumbnail[..., 0], thumbnail[..., 1], thumbnail[..., 2]
    value = np.maximum(np.maximum(red, green), blue).astype(np.float32) / 255.0
    low = np.minimum(np.minimum(red, green), blue).astype(np.float32) / 255.0
    saturation = np.where(value > 0, (value - low) / np.maximum(value, 1e-6), 0.0)
    threshold = params.saturation_threshold
    if threshold is None:
        threshold = filters.threshold_otsu(saturation) if np.ptp(saturation) > 0 else 1.0
        threshold = max(float(threshold), params.min_saturation)
    mask = (saturation > threshold) & ~((value > params.max_value) & (saturation < 2 * threshold))
    px_per_um = 1.0 / thumbnail_mpp
    radius = max(1, int(round(params.closing_um * px_per_um / 2)))
    mask = morphology.closing(mask, morphology.disk(radius))
    min_object = max(1, int(params.min_object_um2 * px_per_um**2))
    mask = morphology.remove_small_objects(mask, max_size=min_object)
    mask = morphology.remove_small_holes(mask, max_size=max(1, int(params.min_hole_um2 * px_per_um**2)))
    return mask
