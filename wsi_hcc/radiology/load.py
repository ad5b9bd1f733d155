"""Any volume in: a NIfTI/NRRD/MHA file, a DICOM series folder, a DICOM file or a DICOM SEG.

The one entry point that chooses the reader; it sits above ``volume`` (the record) and ``dicom``
(the DICOM readers), which do not import each other in a cycle.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.dicom import is_dicom_seg, read_dicom_file, read_dicom_seg, read_dicom_series
from wsi_hcc.radiology.volume import ITK_SUFFIXES, Volume, from_sitk, is_nifti_path

__all__ = ["load_volume"]


def load_volume(path: str | Path, modality: str | None = None, series_uid: str | None = None) -> Volume:
    """Read a NIfTI/NRRD/MHA file, a DICOM series folder, a single DICOM file or a DICOM SEG.

    Parameters
    ----------
    path
        ``.nii``/``.nii.gz``/``.nrrd``/``.mha`` file, a folder holding one DICOM series (any transfer
        syntax GDCM reads, JPEG-2000 included), or a ``.dcm`` file (a DICOM SEG becomes a label map).
    modality
        Overrides the modality (NIfTI files carry none; DICOM files carry their own).
    series_uid
        Picks one series when a folder holds several.

    Returns
    -------
    Volume
        ``array`` in ``(z, y, x)`` order with spacing, LPS origin and direction.
    """
    path = Path(path)
    if not path.exists():
        raise WsiHccError(f"{path}: no such file or folder; give a NIfTI file, a DICOM file or a DICOM series folder")
    if path.is_dir():
        volume = read_dicom_series(path, series_uid=series_uid)
    elif is_nifti_path(path) or path.name.lower().endswith(ITK_SUFFIXES):
        volume = _read_itk_file(path)
    elif is_dicom_seg(path):
        volume = read_dicom_seg(path)
    else:
        volume = read_dicom_file(path)
    return replace(volume, modality=modality) if modality is not None else volume


def _read_itk_file(path: Path) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise WsiHccError(f"{path}: cannot read the image ({first[:120]}); check that the file is complete") from exc
    return from_sitk(image)
