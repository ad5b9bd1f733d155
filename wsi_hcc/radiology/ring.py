"""Peritumoral rings from a distance transform in millimetres (anisotropic spacing handled).

``scipy.ndimage.distance_transform_edt(~tumour, sampling=spacing)`` measures from a voxel centre
to the nearest tumour voxel *centre*. The tumour's surface lies beyond that centre, somewhere
inside its voxel, so a ring built on centre distances is too thin by up to half a voxel along
each axis: on 5 mm slices a 6 mm ring loses 10-15 % of its volume, on a 3 mm grid 20-25 %. The
distance to the nearest tumour voxel's *box* errs the other way (the staircase of boxes sticks
out at its corners), by a similar amount. The surface distance used here is the mean of the two;
on spheres it matches the analytic shell within about 5 % from 1 mm isotropic to 5 x 0.7 x 0.7 mm
and 3 mm grids (tests/test_radiology_ring.py).

Only a box around the tumour, padded by the outer width, is transformed, so a small tumour in a
512x512x200 CT costs tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["signed_distance_mm", "peritumoral_ring", "ring_sweep", "mask_volume_ml"]


def _spacing(spacing_mm: Sequence[float]) -> np.ndarray:
    spacing = np.asarray(spacing_mm, dtype=float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing_mm must be three positive numbers (z, y, x), got {spacing_mm}")
    return spacing


def _surface_distance(region: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """For every voxel outside ``region``: its distance (mm) to the region's surface, see the module docstring."""
    from scipy.ndimage import distance_transform_edt

    centre_mm, nearest = distance_transform_edt(~region, sampling=spacing, return_distances=True,
                                                return_indices=True)
    gap = np.zeros(region.shape, np.float32)
    for axis in range(3):
        index = np.arange(region.shape[axis]).reshape([-1 if a == axis else 1 for a in range(3)])
        offset = np.abs(index - nearest[axis]).astype(np.float32) * spacing[axis]
        gap += np.maximum(offset - spacing[axis] / 2, 0) ** 2
    return (centre_mm.astype(np.float32) + np.sqrt(gap)) / 2


def _crop(mask: np.ndarray, spacing: np.ndarray, pad_mm: float | None) -> tuple[slice, ...]:
    """The mask's bounding box padded by ``pad_mm`` (+2 voxels), or the whole array for ``None``."""
    if pad_mm is None:
        return tuple(slice(None) for _ in range(3))
    pad = np.ceil(pad_mm / spacing).astype(int) + 2
    box = []
    for axis in range(3):
        # Projections are much cheaper than np.nonzero on a 512x512x200 mask.
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hits[0]) - pad[axis], 0), min(int(hits[-1]) + pad[axis] + 1, mask.shape[axis])))
    return tuple(box)


def _signed_in_box(mask: np.ndarray, spacing: np.ndarray, max_mm: float | None):
    """(box, signed distance inside the box) for a non-empty mask."""
    box = _crop(mask, spacing, max_mm)
    sub = mask[box]
    background = ~sub
    inside = _surface_distance(background, spacing) if background.any() else np.full(sub.shape, np.inf, np.float32)
    return box, np.where(sub, -inside, _surface_distance(sub, spacing))


def _check_mask(mask: np.ndarray, spacing_mm: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3D (z, y, x), got shape {mask.shape}")
    return mask, _spacing(spacing_mm)


def signed_distance_mm(mask: np.ndarray, spacing_mm: Sequence[float], max_mm: float | None = None) -> np.ndarray:
    """Signed distance (mm, float32) from each voxel centre to the mask's surface: > 0 outside, < 0 inside.

    With ``max_mm``, only a box padded by ``max_mm`` around the mask is computed and voxels beyond
    it read ``+inf`` (all of them are farther than ``max_mm``). An empty mask gives ``+inf`` everywhere.
    """
    mask, spacing = _check_mask(mask, spacing_mm)
    out = np.full(mask.shape, np.inf, np.float32)
    if mask.any():
        box, distance = _signed_in_box(mask, spacing, max_mm)
        out[box] = distance
    return out


def peritumoral_ring(tumour_mask: np.ndarray, spacing_mm: Sequence[float], outer_mm: float = 6.0,
                     inner_mm: float = 0.0, within: np.ndarray | None = None) -> np.ndarray:
    """The voxels between ``inner_mm`` and ``outer_mm`` from the tumour surface (bool, same shape).

    Parameters
    ----------
    tumour_mask
        Bool ``(z, y, x)``; all lesions together.
    spacing_mm
        Voxel size ``(z, y, x)`` in mm.
    outer_mm, inner_mm
        Ring bounds in mm from the surface, ``inner_mm < outer_mm``. ``inner_mm`` may be negative
        to take a margin inside the tumour too (e.g. ``-2`` with ``outer_mm=6``).
    within
        Optional bool mask (the liver) the ring is clipped to.

    Returns
    -------
    np.ndarray
        Bool ``(z, y, x)``; empty when the tumour mask is empty.
    """
    return ring_sweep(tumour_mask, spacing_mm, (outer_mm,), within=within, inner_mm=inner_mm)[float(outer_mm)]


def ring_sweep(tumour_mask: np.ndarray, spacing_mm: Sequence[float], widths_mm: Sequence[float] = (2, 4, 6, 8, 10),
               within: np.ndarray | None = None, nested: bool = True, inner_mm: float = 0.0) -> dict[float, np.ndarray]:
    """Rings of several outer widths from one distance transform.

    ``nested=True`` gives ``inner_mm``..w rings (each contains the narrower ones); ``nested=False``
    gives bands between consecutive widths (inner..w1, w1..w2, ...). Keys are the outer widths in mm.
    """
    mask, spacing = _check_mask(tumour_mask, spacing_mm)
    widths = sorted(float(w) for w in widths_mm)
    if not widths or widths[0] <= inner_mm:
        raise ValueError(f"widths_mm ({widths_mm}) must all exceed inner_mm ({inner_mm})")
    if within is not None and np.shape(within) != mask.shape:
        raise ValueError(f"within has shape {np.shape(within)}, the tumour mask {mask.shape}")
    rings = {width: np.zeros(mask.shape, bool) for width in widths}
    if not mask.any():
        return rings
    box, distance = _signed_in_box(mask, spacing, max(widths[-1], 0.0))
    allowed = np.ones(distance.shape, bool) if within is None else np.asarray(within, bool)[box]
    previous = inner_mm
    for width in widths:
        lower = inner_mm if nested else previous
        rings[width][box] = allowed & (distance > lower) & (distance <= width)
        previous = width
    return rings


def mask_volume_ml(mask: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Volume of a bool mask in millilitres."""
    return float(np.count_nonzero(mask)) * float(np.prod(_spacing(spacing_mm))) / 1000.0
