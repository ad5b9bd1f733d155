"""A whole organ (or any region) in one box: the mask's bounding box resampled onto a small cube, outside zeroed.

For models that read a whole region rather than a tumour-centred crop (whole-liver survival, after
Huang 2024): the box is the region's bounding box plus ``margin_mm``, made a cube and sampled on
``size_vox`` voxels per side (isotropic spacing = the box's longest side / ``size_vox``), so every
patient's liver fills the grid whatever its size; scale then differs between patients, which is
what a bounding-box input means. Images are resampled linearly (in physical LPS space, so phases
on other grids land on the box), normalised like the crops (``crops``: CT in 40 HU units, MR
z-scored inside the region) and set to 0 outside the region, so the network sees nothing but it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.crops import _normalise, channel_name, split_channel
from wsi_hcc.radiology.resample import resample_like
from wsi_hcc.radiology.volume import Volume

__all__ = ["RegionBox", "region_box"]


@dataclass(frozen=True, eq=False)
class RegionBox:
    """Normalised channels (0 outside the region) and the region mask on one cube grid (``grid``: its geometry)."""

    channels: dict[str, np.ndarray]
    mask: np.ndarray
    grid: Volume

    def stack(self, names) -> np.ndarray:
        """``(C + 1, z, y, x)`` float32: the named channels (zeros where absent), then the mask."""
        planes = [self.channels.get(name, np.zeros(self.mask.shape, np.float32)) for name in names]
        return np.stack([*planes, self.mask.astype(np.float32)]).astype(np.float32)


def _box_grid(mask: Volume, size_vox: int, margin_mm: float) -> Volume:
    hits = np.argwhere(mask.array)
    low, high = hits.min(axis=0), hits.max(axis=0)
    extent_mm = (high - low + 1) * np.asarray(mask.spacing_mm) + 2 * margin_mm
    spacing = float(extent_mm.max()) / size_vox
    centre_lps = mask.affine_lps @ np.append((low + high) / 2.0, 1.0)
    origin = centre_lps[:3] - mask.direction @ np.full(3, spacing * (size_vox - 1) / 2.0)
    return Volume(np.zeros((size_vox,) * 3, np.uint8), spacing_mm=(spacing,) * 3, origin_mm=tuple(origin),
                  direction=mask.direction, modality="SEG")


def region_box(images: Mapping[str, Volume], mask: Volume, size_vox: int = 32, margin_mm: float = 0.0) -> RegionBox:
    """Resample ``images`` (``"MODALITY:phase"`` or a bare phase = CT) into the cube around ``mask`` (non-zero).

    Raises a one-line error for an empty mask or no images.
    """
    if not images:
        raise WsiHccError("no images for the region box; give at least one phase, e.g. --image portal=portal.nii.gz")
    region = np.asarray(mask.array) != 0
    if not region.any():
        raise WsiHccError("the region mask is empty; check the mask file and its label value")
    mask = mask.with_array(region)
    grid = _box_grid(mask, int(size_vox), float(margin_mm))
    inside = np.asarray(resample_like(mask, grid, label=True).array, bool)
    channels = {}
    for name, volume in images.items():
        modality, phase = split_channel(name)
        values = resample_like(volume.with_array(np.asarray(volume.array, np.float32), modality=modality), grid,
                               default_value=-1024.0 if modality == "CT" else 0.0).array
        channels[channel_name(modality, phase)] = np.where(inside, _normalise(modality, values, inside), 0.0
                                                           ).astype(np.float32)
    return RegionBox(channels=channels, mask=inside, grid=grid)
