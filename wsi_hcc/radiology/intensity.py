"""CT windows and MRI intensity normalisation: pure functions on arrays, float32 out.

CT is calibrated (Hounsfield units), so a window (level, width) maps HU to [0, 1] the same way
for every scanner. MR intensities are arbitrary per scan, so they are normalised per volume,
ideally inside a mask (the liver or the body).
"""

from __future__ import annotations

import numpy as np

from wsi_hcc.radiology.volume import Volume

__all__ = ["CT_WINDOWS", "MRI_NORMALISATIONS", "ct_window", "mri_normalise", "normalise_volume"]

# (level, width) in HU. Liver values are the usual narrow soft-tissue window that separates
# enhancing lesions from parenchyma; the rest are standard radiology presets.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "liver": (60.0, 160.0),
    "abdomen": (40.0, 400.0),
    "soft_tissue": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "lung": (-600.0, 1500.0),
    "wide": (0.0, 2000.0),
}

MRI_NORMALISATIONS = ("zscore", "percentile", "minmax")


def ct_window(array_hu: np.ndarray, window: str | tuple[float, float] = "liver") -> np.ndarray:
    """Clip HU to a window and scale it to [0, 1] (float32).

    ``window`` is a preset name from ``CT_WINDOWS`` or ``(level, width)`` in HU.
    """
    if isinstance(window, str):
        if window not in CT_WINDOWS:
            raise ValueError(f"unknown CT window {window!r}; choose from {sorted(CT_WINDOWS)} or give (level, width)")
        level, width = CT_WINDOWS[window]
    else:
        level, width = (float(v) for v in window)
    if width <= 0:
        raise ValueError(f"window width must be positive, got {width}")
    low = level - width / 2
    return np.clip((np.asarray(array_hu, np.float32) - low) / width, 0.0, 1.0).astype(np.float32)


def mri_normalise(array: np.ndarray, method: str = "zscore", mask: np.ndarray | None = None,
                  percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Normalise MR intensities using statistics from ``mask`` (default: voxels above the 10th percentile).

    Methods: ``"zscore"`` (mean 0, sd 1 inside the mask), ``"percentile"`` (the mask's
    ``percentiles`` map to 0 and 1, clipped), ``"minmax"`` (the mask's min and max to 0 and 1).
    """
    values = np.asarray(array, np.float32)
    if mask is None:
        # Background air is a large share of an MR volume and would dominate the statistics.
        mask = values > np.percentile(values, 10)
    inside = values[np.asarray(mask, bool)]
    if inside.size == 0:
        raise ValueError("the normalisation mask selects no voxels")
    if method == "zscore":
        std = float(inside.std())
        return ((values - float(inside.mean())) / (std if std > 0 else 1.0)).astype(np.float32)
    if method == "percentile":
        low, high = np.percentile(inside, percentiles)
    elif method == "minmax":
        low, high = float(inside.min()), float(inside.max())
    else:
        raise ValueError(f"method must be one of {MRI_NORMALISATIONS}, got {method!r}")
    scale = float(high - low) or 1.0
    return np.clip((values - float(low)) / scale, 0.0, 1.0).astype(np.float32)


def normalise_volume(volume: Volume, preset: str | None = None, mask: np.ndarray | None = None) -> Volume:
    """Window a CT (preset from ``CT_WINDOWS``, default ``"liver"``) or normalise an MR
    (method from ``MRI_NORMALISATIONS``, default ``"zscore"``), chosen by ``volume.modality``."""
    if volume.modality == "CT":
        return volume.with_array(ct_window(volume.array, preset or "liver"), modality="CT")
    if volume.modality in ("MR", ""):
        return volume.with_array(mri_normalise(volume.array, preset or "zscore", mask), modality=volume.modality)
    raise ValueError(f"no intensity normalisation for modality {volume.modality!r}")
