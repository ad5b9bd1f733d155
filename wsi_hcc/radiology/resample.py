"""Resampling to a voxel spacing or onto another volume's grid, and reorientation (SimpleITK).

Labels use nearest-neighbour interpolation so no new label values appear; images use linear
interpolation (or B-spline). Resampling to a spacing keeps the physical field of view: the outer
faces of the first and last voxels stay where they were, so a 3 mm grid resampled to 1.5 mm and
back lands on the original voxel centres.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsi_hcc.radiology.volume import Volume, from_sitk, to_sitk

__all__ = ["resample_to_spacing", "resample_like", "reorient", "INTERPOLATORS"]

INTERPOLATORS = ("nearest", "linear", "bspline")


def _interpolator(name: str):
    import SimpleITK as sitk

    table = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}
    if name not in table:
        raise ValueError(f"interpolation must be one of {INTERPOLATORS}, got {name!r}")
    return table[name]


def _default_value(volume: Volume, default: float | None) -> float:
    if default is not None:
        return float(default)
    # Outside the scanned field: air for CT, zero for anything else (labels, MR).
    return -1024.0 if volume.modality == "CT" else 0.0


def resample_to_spacing(volume: Volume, spacing_mm: float | Sequence[float], label: bool = False,
                        interpolation: str | None = None, default_value: float | None = None) -> Volume:
    """Resample ``volume`` to ``spacing_mm`` (one number, or ``(z, y, x)``), keeping the field of view.

    Parameters
    ----------
    label
        A label map: nearest-neighbour interpolation, dtype kept.
    interpolation
        ``"nearest"``, ``"linear"`` or ``"bspline"``; default nearest for labels, linear otherwise.
    default_value
        Value outside the input; default -1024 for CT, 0 otherwise.
    """
    import SimpleITK as sitk

    new = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,)).copy()
    if np.any(new <= 0):
        raise ValueError(f"spacing_mm must be positive, got {spacing_mm}")
    old = np.asarray(volume.spacing_mm)
    extent = old * np.asarray(volume.shape)
    size = np.maximum(1, np.round(extent / new)).astype(int)
    # Shift the first centre so the outer face of the first voxel stays in place.
    shift = volume.direction @ ((new - old) / 2)
    origin = np.asarray(volume.origin_mm) + shift
    method = interpolation or ("nearest" if label else "linear")
    reference = sitk.Image([int(s) for s in size[::-1]], sitk.sitkUInt8)
    reference.SetSpacing(tuple(new[::-1]))
    reference.SetOrigin(tuple(origin))
    reference.SetDirection(tuple(volume.direction[:, ::-1].ravel()))
    return _resample(volume, reference, method, label, default_value)


def resample_like(volume: Volume, reference: Volume, label: bool = False, interpolation: str | None = None,
                  default_value: float | None = None, transform=None) -> Volume:
    """Resample ``volume`` onto ``reference``'s grid (shape, spacing, origin, direction).

    ``transform`` (a SimpleITK transform mapping reference points to ``volume`` points, as
    ``register_volume`` returns) is applied on the way.
    """
    method = interpolation or ("nearest" if label else "linear")
    return _resample(volume, to_sitk(reference.with_array(np.zeros(reference.shape, np.uint8))), method, label,
                     default_value, transform)


def _resample(volume: Volume, reference, method: str, label: bool, default_value: float | None,
              transform=None) -> Volume:
    import SimpleITK as sitk

    image = to_sitk(volume)
    output_type = image.GetPixelID() if (label or method == "nearest") else sitk.sitkFloat32
    out = sitk.Resample(image, reference, transform or sitk.Transform(), _interpolator(method),
                        _default_value(volume, default_value), output_type)
    result = from_sitk(out, modality=volume.modality, label_names=volume.label_names)
    if volume.array.dtype == bool:
        result = result.with_array(result.array.astype(bool), modality=volume.modality)
    return result


def reorient(volume: Volume, orientation: str = "LPS") -> Volume:
    """Permute/flip axes so array axes ``(x, y, z)`` point towards ``orientation``'s letters.

    ``orientation`` uses DICOM's convention (as ``SimpleITK.DICOMOrient``): ``"LPS"`` makes the
    direction the identity (x to the patient's left, y posterior, z superior); ``"RAS"`` is the
    NIfTI/nibabel canonical layout. Voxel values are only permuted, never interpolated.
    """
    import SimpleITK as sitk

    orientation = orientation.upper()
    if sorted(orientation) != sorted(set(orientation)) or len(orientation) != 3 or \
            {frozenset("LR"), frozenset("AP"), frozenset("IS")} != {frozenset(c + _opposite(c)) for c in orientation}:
        raise ValueError(f"orientation must be three letters, one of L/R, P/A, S/I each, got {orientation!r}")
    out = sitk.DICOMOrient(to_sitk(volume), orientation)
    result = from_sitk(out, modality=volume.modality, label_names=volume.label_names)
    if volume.array.dtype == bool:
        result = result.with_array(result.array.astype(bool), modality=volume.modality)
    return result


def _opposite(letter: str) -> str:
    return {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}.get(letter, "?")
