"""DICOM edges: one series folder (SimpleITK/GDCM, JPEG-2000 included), one file, a DICOM SEG (pydicom).

Every function returns a ``Volume`` (see ``volume.py`` for the axis and LPS conventions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.volume import Volume, from_sitk

__all__ = ["read_dicom_series", "read_dicom_file", "read_dicom_seg", "is_dicom_seg", "SEG_SOP_CLASS_UID"]

SEG_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"


def _header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError) as exc:
        raise WsiHccError(f"{path}: not a readable DICOM file ({exc}); give a DICOM, NIfTI, NRRD or MHA file") from exc


def is_dicom_seg(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM Segmentation object (False for anything else, unreadable included)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except (InvalidDicomError, OSError):
        return False
    return str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS_UID


def read_dicom_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """Read the DICOM series in ``folder`` (slices sorted by position by GDCM).

    Raises ``WsiHccError`` when the folder holds no series, several series and no ``series_uid``,
    or slices whose spacing is uneven (a missing slice).
    """
    import SimpleITK as sitk

    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    series = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series:
        raise WsiHccError(f"{folder}: no DICOM series found; point at a folder holding the .dcm slices of one series")
    if series_uid is None:
        if len(series) > 1:
            raise WsiHccError(f"{folder}: holds {len(series)} DICOM series ({', '.join(s or '?' for s in series)}); "
                              "pick one with series_uid / --series, or give each series its own folder")
        series_uid = series[0]
    elif series_uid not in series:
        raise WsiHccError(f"{folder}: no series {series_uid} (found {', '.join(series)}); check the series UID")
    files = list(reader.GetGDCMSeriesFileNames(str(folder), series_uid))
    header = _header(Path(files[0]))
    if len(files) > 2:
        _check_even_slices(folder, files)
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise WsiHccError(f"{folder}: GDCM cannot decode the series ({str(exc).strip().splitlines()[-1][:120]}); "
                          "convert it to an uncompressed transfer syntax (e.g. gdcmconv --raw)") from exc
    return from_sitk(image, modality=str(header.get("Modality", "")))


def _check_even_slices(folder: Path, files: list[str]) -> None:
    import pydicom

    positions, normal = [], None
    for name in files:
        ds = pydicom.dcmread(name, stop_before_pixels=True,
                             specific_tags=["ImagePositionPatient", "ImageOrientationPatient"])
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            return
        if normal is None:
            orientation = np.asarray(ds.ImageOrientationPatient, float)
            row, col = orientation[:3], orientation[3:]
            normal = np.cross(row, col)
        positions.append(float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
    steps = np.diff(np.sort(positions))
    if steps.size and (steps.min() <= 0 or steps.max() - steps.min() > 0.01 * np.median(steps) + 1e-3):
        raise WsiHccError(f"{folder}: slice spacing is uneven ({steps.min():.3g} to {steps.max():.3g} mm; a slice is "
                          "missing, duplicated or from another series); give a folder with one complete series")


def read_dicom_file(path: str | Path) -> Volume:
    """Read one DICOM image file (one slice, or a multi-frame volume) as a ``Volume``."""
    import SimpleITK as sitk

    path = Path(path)
    header = _header(path)
    if "PixelData" not in header and "FloatPixelData" not in header:
        try:
            import pydicom

            header = pydicom.dcmread(path, specific_tags=["PixelData", "Modality"])
        except Exception:  # noqa: BLE001 - any failure means: no pixels to read
            header = None
        if header is None or "PixelData" not in header:
            raise WsiHccError(f"{path}: DICOM file without pixel data; give an image, a series folder or a SEG")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise WsiHccError(f"{path}: cannot read the DICOM image ({str(exc).strip().splitlines()[-1][:120]}); "
                          "check the transfer syntax or convert it with gdcmconv --raw") from exc
    return from_sitk(image, modality=str(header.get("Modality", "")))


def read_dicom_seg(path: str | Path) -> Volume:
    """Read a DICOM Segmentation as a label map: voxel value = segment number, 0 = background.

    Frames are placed by their Image Position (Patient) along the plane normal; BINARY frames
    are used as stored and FRACTIONAL frames are thresholded at one half. Where segments overlap
    the higher segment number wins. ``label_names`` holds each segment's label.
    """
    import pydicom

    path = Path(path)
    ds = pydicom.dcmread(path)
    if str(ds.get("SOPClassUID", "")) != SEG_SOP_CLASS_UID:
        raise WsiHccError(f"{path}: not a DICOM SEG (SOP class {ds.get('SOPClassUID', '?')}); "
                          "use load_volume for images")
    try:
        frames = np.asarray(ds.pixel_array)
        shared = ds.SharedFunctionalGroupsSequence[0]
        orientation = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
        measures = shared.PixelMeasuresSequence[0]
        # PixelSpacing is (between rows, between columns) = (y, x).
        y_mm, x_mm = (float(v) for v in measures.PixelSpacing)
        per_frame = ds.PerFrameFunctionalGroupsSequence
    except (AttributeError, IndexError, KeyError, ValueError) as exc:
        raise WsiHccError(f"{path}: DICOM SEG without the geometry or pixels it needs ({exc}); "
                          "re-export it with dcmqi or highdicom") from exc
    if frames.ndim == 2:
        frames = frames[None]
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    # Some writers list more per-frame items than frames stored; only the first n_frames describe pixels.
    if len(per_frame) < n_frames or frames.shape[0] != n_frames:
        raise WsiHccError(f"{path}: DICOM SEG has {frames.shape[0]} frames of pixels but {len(per_frame)} frame "
                          "descriptions; the file is damaged or truncated, re-export it")
    if str(ds.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        frames = frames >= float(ds.get("MaximumFractionalValue", 255)) / 2
    frames = frames.astype(bool)

    row, col = orientation[:3], orientation[3:]
    normal = np.cross(row, col)
    positions, segments = [], []
    for item in per_frame[:n_frames]:
        positions.append(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float))
        segments.append(int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber))
    offsets = np.array([np.dot(normal, p) for p in positions])
    unique = np.unique(np.round(offsets, 3))
    if unique.size > 1:
        steps = np.diff(unique)
        slice_mm = float(np.median(steps))
        if steps.max() - steps.min() > 0.01 * slice_mm + 1e-3:
            # Gaps between segmented slices: fill them so each frame sits at its true position.
            slice_mm = float(steps.min())
    else:
        slice_mm = float(measures.get("SpacingBetweenSlices", measures.get("SliceThickness", 1.0)) or 1.0)
    first = int(np.argmin(offsets))
    n_slices = int(round((unique[-1] - unique[0]) / slice_mm)) + 1
    labels = np.zeros((n_slices, frames.shape[1], frames.shape[2]), np.uint16)
    for frame, offset, segment in sorted(zip(frames, offsets, segments), key=lambda t: t[2]):
        z = int(round((offset - unique[0]) / slice_mm))
        labels[z][frame] = segment
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", f"segment {s.SegmentNumber}"))
             for s in ds.get("SegmentSequence", [])}
    dtype = np.uint8 if labels.max() < 256 else np.uint16
    # Direction columns in array order (z, y, x): slice normal, column direction, row direction.
    direction = np.stack([normal, col, row], axis=1)
    return Volume(array=labels.astype(dtype), spacing_mm=(slice_mm, y_mm, x_mm), origin_mm=tuple(positions[first]),
                  direction=direction, modality="SEG", label_names=names)
