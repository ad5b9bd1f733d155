"""Tumour-centred crops of a fixed physical size: phases (and modalities) as channels, region masks beside them.

A crop is a cube of ``size_vox`` voxels of ``spacing_mm`` (default 32 x 2 mm = 64 mm) centred on the
tumour's bounding box, resampled from every input volume in physical (LPS) space, so phases or
modalities on different grids land on one grid without a separate registration step (register
first when the patient moved). A fixed millimetre size, not a box scaled to the tumour, keeps
size and distances comparable between patients: a 6 mm ring is 3 voxels in every crop.

Channel names are ``"MODALITY:phase"`` (``"CT:arterial"``, ``"MR:portal"``). CT is clipped to the
window ``CT_CROP_WINDOW`` and scaled to ``(HU - level) / CT_CROP_SCALE_HU`` (-3 to 3), so a 40 HU
lesion-liver contrast is one unit; MR is z-scored inside the crop's liver (or the whole crop) and
clipped to +-5, as MR intensities carry no absolute scale. Inputs of unit scale matter: with CT
windowed to [0, 1] instead, the ~0.2-unit contrast of small satellite nodules trained too slowly
to be learnt in a few epochs.

The peritumoral ring is computed on the input grid (``peritumoral_ring``, clipped to the liver
when one is given) and resampled with the masks, nearest neighbour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.intensity import ct_window, mri_normalise
from wsi_hcc.radiology.resample import resample_like
from wsi_hcc.radiology.ring import peritumoral_ring
from wsi_hcc.radiology.volume import Volume

__all__ = ["CropSpec", "Crop", "make_crop", "channel_name", "split_channel", "CT_CROP_WINDOW", "CT_CROP_SCALE_HU",
           "MASK_CHANNELS"]

# (level, width) HU: wide enough that arterial hyper-enhancement (~135 HU) and portal washout
# stay below saturation, narrow enough for the ~40 HU lesion-liver contrast to span 0.17 of the range.
CT_CROP_WINDOW = (80.0, 240.0)
CT_CROP_SCALE_HU = 40.0
MASK_CHANNELS = ("tumour", "ring")


@dataclass(frozen=True)
class CropSpec:
    """Crop geometry: a cube of ``size_vox`` voxels at ``spacing_mm`` (isotropic), and the ring width."""

    size_vox: int = 32
    spacing_mm: float = 2.0
    ring_mm: float = 6.0

    @property
    def extent_mm(self) -> float:
        return self.size_vox * self.spacing_mm

    def to_json(self) -> dict:
        return {"size_vox": self.size_vox, "spacing_mm": self.spacing_mm, "ring_mm": self.ring_mm}

    @classmethod
    def from_json(cls, data: Mapping) -> CropSpec:
        return cls(int(data["size_vox"]), float(data["spacing_mm"]), float(data["ring_mm"]))


@dataclass(frozen=True, eq=False)
class Crop:
    """Channels and region masks on one crop grid.

    Attributes
    ----------
    channels
        ``"MODALITY:phase"`` -> float32 ``(z, y, x)`` normalised image.
    tumour, ring, liver
        Bool ``(z, y, x)``; ``liver`` is ``None`` when no liver mask was given.
    grid
        A ``Volume`` (uint8 zeros) carrying the crop's spacing, origin and direction, so maps
        computed on the crop (Grad-CAM) are written with the right geometry.
    """

    channels: dict[str, np.ndarray]
    tumour: np.ndarray
    ring: np.ndarray
    liver: np.ndarray | None
    grid: Volume

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.grid.shape

    def stack(self, names: Sequence[str], masks: Sequence[str] = MASK_CHANNELS) -> np.ndarray:
        """``(C, z, y, x)`` float32: the named channels (zeros for absent ones), then the masks."""
        planes = [self.channels.get(name, np.zeros(self.shape, np.float32)) for name in names]
        planes += [self.mask(name).astype(np.float32) for name in masks]
        return np.stack(planes).astype(np.float32)

    def mask(self, name: str) -> np.ndarray:
        if name == "tumour":
            return self.tumour
        if name == "ring":
            return self.ring
        if name == "liver":
            return self.liver if self.liver is not None else np.zeros(self.shape, bool)
        raise ValueError(f"unknown mask {name!r}; choose tumour, ring or liver")

    def regions(self, outside: bool = False) -> dict[str, np.ndarray]:
        """Disjoint regions for CAM energy and graph nodes: tumour, ring, far liver (liver minus both);
        with ``outside``, also the rest of the crop (empty when no liver mask was given)."""
        liver = self.liver if self.liver is not None else ~(self.tumour | self.ring)
        regions = {"tumour": self.tumour, "ring": self.ring & ~self.tumour, "liver": liver & ~self.tumour & ~self.ring}
        if outside:
            regions["outside"] = ~(regions["tumour"] | regions["ring"] | regions["liver"])
        return regions

    def has_modality(self, modality: str) -> bool:
        return any(split_channel(name)[0] == modality for name in self.channels)


def channel_name(modality: str, phase: str) -> str:
    return f"{modality}:{phase}"


def split_channel(name: str) -> tuple[str, str]:
    """``"MR:portal"`` -> ``("MR", "portal")``; a bare phase name is CT."""
    modality, sep, phase = name.partition(":")
    return (modality, phase) if sep else ("CT", name)


def _crop_grid(tumour: Volume, spec: CropSpec) -> Volume:
    hits = np.argwhere(tumour.array)
    centre_index = (hits.min(axis=0) + hits.max(axis=0)) / 2.0
    centre_lps = tumour.affine_lps @ np.append(centre_index, 1.0)
    spacing = np.full(3, float(spec.spacing_mm))
    origin = centre_lps[:3] - tumour.direction @ (spacing * (spec.size_vox - 1) / 2.0)
    shape = (spec.size_vox,) * 3
    return Volume(np.zeros(shape, np.uint8), spacing_mm=tuple(spacing), origin_mm=tuple(origin),
                  direction=tumour.direction, modality="SEG")


def _normalise(modality: str, array: np.ndarray, liver: np.ndarray | None) -> np.ndarray:
    if modality == "CT":
        width = CT_CROP_WINDOW[1]
        return ((ct_window(array, CT_CROP_WINDOW) - 0.5) * (width / CT_CROP_SCALE_HU)).astype(np.float32)
    mask = liver if liver is not None and liver.sum() >= 10 else np.ones(array.shape, bool)
    return np.clip(mri_normalise(array, "zscore", mask), -5.0, 5.0).astype(np.float32)


def make_crop(images: Mapping[str, Volume], tumour: Volume, liver: Volume | None = None,
              spec: CropSpec = CropSpec()) -> Crop:
    """Crop every image around the tumour onto one grid (see the module docstring).

    Parameters
    ----------
    images
        ``"MODALITY:phase"`` (or a bare phase name, taken as CT) -> volume, each on any grid.
    tumour
        Bool or label volume (non-zero = tumour) on any grid; the crop is centred on its bounding box.
    liver
        Optional liver mask (non-zero = liver, tumour included or not); clips the ring and defines
        the far-liver region.
    spec
        Crop size, spacing and ring width.
    """
    if not images:
        raise WsiHccError("no images to crop; give at least one phase, e.g. --image portal=portal.nii.gz")
    tumour_mask = np.asarray(tumour.array) != 0
    if not tumour_mask.any():
        raise WsiHccError("the tumour mask is empty; check the mask file and its label value")
    tumour = tumour.with_array(tumour_mask)
    liver_mask = None
    if liver is not None:
        liver_on_tumour = liver.with_array(np.asarray(liver.array) != 0)
        if not liver_on_tumour.same_grid(tumour):
            liver_on_tumour = resample_like(liver_on_tumour, tumour, label=True)
        liver_mask = np.asarray(liver_on_tumour.array, bool) | tumour_mask
    ring = peritumoral_ring(tumour_mask, tumour.spacing_mm, spec.ring_mm, within=liver_mask)
    grid = _crop_grid(tumour, spec)
    tumour_crop = np.asarray(resample_like(tumour, grid, label=True).array, bool)
    ring_crop = np.asarray(resample_like(tumour.with_array(ring), grid, label=True).array, bool) & ~tumour_crop
    liver_crop = None
    if liver_mask is not None:
        liver_crop = np.asarray(resample_like(tumour.with_array(liver_mask), grid, label=True).array, bool)
    channels = {}
    for name, volume in images.items():
        modality, phase = split_channel(name)
        resampled = resample_like(volume.with_array(np.asarray(volume.array, np.float32), modality=modality), grid,
                                  default_value=-1024.0 if modality == "CT" else 0.0).array
        channels[channel_name(modality, phase)] = _normalise(modality, resampled, liver_crop)
    return Crop(channels=channels, tumour=tumour_crop, ring=ring_crop, liver=liver_crop, grid=grid)
