"""The ``Volume`` record, its SimpleITK conversions and NIfTI writing (``load`` reads any volume file).

Conventions (the same everywhere in ``wsi_hcc.radiology``):

- ``array`` is indexed ``(z, y, x)``: slice, row, column, as SimpleITK's ``GetArrayFromImage``.
- ``spacing_mm`` follows the array axes: ``(z, y, x)`` in millimetres.
- ``origin_mm`` is the physical position of the centre of voxel ``array[0, 0, 0]`` in the DICOM
  patient frame, LPS (x towards the patient's Left, y Posterior, z Superior), as SimpleITK and
  DICOM use. It is a point, so it is ordered (L, P, S), not by array axis.
- ``direction`` is a 3x3 matrix whose column ``k`` is the unit LPS vector of array axis ``k``,
  again in array order ``(z, y, x)``. SimpleITK's ``GetDirection()`` is the same matrix with its
  columns reversed (SimpleITK orders axes x, y, z); ``to_sitk``/``from_sitk`` do the conversion.
  So the LPS position of index ``(k, j, i)`` is ``origin_mm + direction @ ((k, j, i) * spacing_mm)``
  (see ``Volume.affine_lps``).

NIfTI files store RAS; reading and writing convert, so a NIfTI written here opens in ITK-SNAP, 3D
Slicer and nibabel with the same geometry.
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError

__all__ = ["Volume", "save_nifti", "to_sitk", "from_sitk", "is_nifti_path", "ITK_SUFFIXES", "require_tumour_inside"]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image or label map with its geometry.

    Attributes
    ----------
    array : np.ndarray
        Shape ``(z, y, x)``; any numeric or bool dtype (labels are integers).
    spacing_mm : tuple of float
        Voxel size along ``(z, y, x)`` in mm.
    origin_mm : tuple of float
        LPS position (mm) of the centre of voxel ``[0, 0, 0]``.
    direction : np.ndarray
        ``(3, 3)``; column ``k`` is the LPS unit vector of array axis ``k`` (order z, y, x).
    modality : str
        ``"CT"``, ``"MR"``, ``"SEG"`` (label map) or ``""`` when unknown.
    label_names : Mapping[int, str]
        For label maps: value -> name (e.g. the segment labels of a DICOM SEG); empty otherwise.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    modality: str = ""
    label_names: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self):
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume.array must be 3D (z, y, x), got shape {array.shape}")
        spacing = tuple(float(s) for s in self.spacing_mm)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing_mm must be three positive numbers (z, y, x), got {self.spacing_mm}")
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ValueError(f"direction must be orthonormal, got {direction.tolist()}")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_mm", tuple(float(o) for o in self.origin_mm))
        object.__setattr__(self, "direction", direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 matrix from array index ``(z, y, x, 1)`` to LPS millimetres ``(L, P, S, 1)``."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing_mm)
        affine[:3, 3] = self.origin_mm
        return affine

    def with_array(self, array: np.ndarray, modality: str | None = None) -> "Volume":
        """The same geometry with other voxel values (a mask, a filtered image)."""
        if np.shape(array) != self.shape:
            raise ValueError(f"array shape {np.shape(array)} differs from the volume's {self.shape}")
        return replace(self, array=array, modality=self.modality if modality is None else modality,
                       label_names={} if modality is not None else self.label_names)

    def same_grid(self, other: "Volume", atol_mm: float = 1e-3) -> bool:
        """Whether ``other`` has the same shape and voxel positions (within ``atol_mm``)."""
        return self.shape == other.shape and np.allclose(self.affine_lps, other.affine_lps, atol=atol_mm)

    def contains_lps(self, point_lps: np.ndarray) -> bool:
        """Whether an LPS point (mm) lies inside the volume's voxels."""
        index = np.linalg.solve(self.affine_lps, np.append(point_lps, 1.0))[:3]
        return bool(np.all(index >= -0.5) and np.all(index <= np.asarray(self.shape) - 0.5))

    def mask_centre_lps(self) -> np.ndarray:
        """The LPS centre (mm) of the bounding box of this mask's non-zero voxels (the mask must not be empty)."""
        hits = np.argwhere(self.array)
        return (self.affine_lps @ np.append((hits.min(axis=0) + hits.max(axis=0)) / 2.0, 1.0))[:3]


def to_sitk(volume: Volume):
    """A ``SimpleITK.Image`` with the volume's voxels and geometry (bool becomes uint8)."""
    import SimpleITK as sitk

    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(reversed(volume.spacing_mm)))
    image.SetOrigin(volume.origin_mm)
    image.SetDirection(tuple(volume.direction[:, ::-1].ravel()))
    return image


def from_sitk(image, modality: str = "", label_names: Mapping[int, str] | None = None) -> Volume:
    """A ``Volume`` from a 3D ``SimpleITK.Image`` (a 2D image becomes one slice)."""
    import SimpleITK as sitk

    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise WsiHccError(f"expected a 3D single-channel image, got {image.GetDimension()}D with "
                          f"{image.GetNumberOfComponentsPerPixel()} components; split channels or phases first")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, ::-1]
    return Volume(array=sitk.GetArrayFromImage(image), spacing_mm=tuple(reversed(image.GetSpacing())),
                  origin_mm=image.GetOrigin(), direction=direction, modality=modality,
                  label_names=dict(label_names or {}))


def is_nifti_path(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_SUFFIXES)


def save_nifti(volume: Volume, path: str | Path) -> Path:
    """Write ``volume`` as NIfTI-1 (gzip when the name ends ``.gz``), atomically, keeping its geometry.

    The qform and sform both hold the RAS affine (code 1, scanner), so every reader agrees. Bool
    arrays are written as uint8.
    """
    import nibabel as nib

    from wsi_hcc.utils.atomic import atomic_write_bytes

    path = Path(path)
    if not is_nifti_path(path):
        raise WsiHccError(f"{path}: a NIfTI output name must end in .nii or .nii.gz")
    if not path.parent.is_dir():
        raise WsiHccError(f"{path}: the folder {path.parent} does not exist; create it first")
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    # NIfTI data are indexed (i, j, k) = (x, y, z) and its world frame is RAS: flip L and P.
    lps_xyz = volume.affine_lps[:, [2, 1, 0, 3]]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_xyz
    image = nib.Nifti1Image(np.ascontiguousarray(array.transpose(2, 1, 0)), ras)
    image.set_qform(ras, code=1)
    image.set_sform(ras, code=1)
    image.header.set_xyzt_units("mm", "sec")
    data = image.to_bytes()
    if path.name.lower().endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)
    return path


def require_tumour_inside(images: Mapping[str, Volume], tumour: Volume, tumour_name: str | Path) -> None:
    """Refuse, in one line, an image that does not contain the tumour's centre: a mask and an image from
    different frames of reference would give a prediction, or NaN features, from the wrong place."""
    centre_lps = tumour.mask_centre_lps()
    for name, image in images.items():
        if not image.contains_lps(centre_lps):
            raise WsiHccError(f"--image {name}: the image does not contain the tumour's centre; the image and "
                              f"{tumour_name} must share a frame of reference (register or re-export them)")
