"""A folder holding one DICOM whole-slide image series (as wsidicomizer writes it) is one slide.

DICOM WSI stores each pyramid level (and the label, overview, thumbnail) as its own file of one
series. openslide reads the whole series given any one of its files and finds the others in the
same folder; here the folder is the slide, so it is named after the folder and its fingerprint
covers every file in it.
"""

from __future__ import annotations

from pathlib import Path

from wsi_hcc.errors import SlideError

__all__ = ["WSI_SOP_CLASS", "is_dicom_file", "is_dicom_folder", "series_file", "folder_files"]

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
_PREAMBLE = 128


def _candidates(folder: Path) -> list[Path]:
    """Files that may be DICOM: ``.dcm`` or no suffix (as PACS exports name them), not hidden."""
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and p.suffix.lower() in (".dcm", "") and p.is_file())


def is_dicom_file(path: Path) -> bool:
    """True if the file has the DICOM preamble and ``DICM`` prefix (PS3.10)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(_PREAMBLE)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_folder(folder: Path) -> bool:
    """True if ``folder`` directly holds DICOM files; cheap (reads 132 bytes per file until one is)."""
    try:
        return folder.is_dir() and any(is_dicom_file(p) for p in _candidates(folder))
    except OSError:
        return False


def series_file(folder: Path) -> Path:
    """One file of the folder's DICOM WSI series, to open the series with.

    Raises
    ------
    SlideError
        One line when the folder holds no DICOM WSI, or more than one series.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    series: dict[str, list[Path]] = {}
    for path in _candidates(folder):
        if not is_dicom_file(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SeriesInstanceUID"])
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise SlideError(f"{path}: cannot read this DICOM file ({exc}); copy it again") from None
        if str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS:
            series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)
    if not series:
        raise SlideError(f"{folder}: holds DICOM files but no whole-slide image (VL Whole Slide Microscopy) "
                         "series; pass a folder that holds one DICOM WSI series")
    if len(series) > 1:
        raise SlideError(f"{folder}: holds {len(series)} DICOM WSI series; put each series in its own folder "
                         "(one folder is one slide)")
    (files,) = series.values()
    return files[0]


def folder_files(folder: Path) -> list[Path]:
    """Every regular, non-hidden file directly in the folder, sorted: what a DICOM slide is made of."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
