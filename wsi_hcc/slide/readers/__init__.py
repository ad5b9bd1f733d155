"""Slide readers: one protocol; openslide and tiffslide back ends chosen per file, Pillow for PNG/JPEG
region images, and DICOM WSI folders read through openslide."""

from __future__ import annotations

import logging
from pathlib import Path

from wsi_hcc.errors import SlideError
from wsi_hcc.slide.readers.base import SlideReader
from wsi_hcc.slide.readers.dicom_folder import is_dicom_folder, series_file
from wsi_hcc.slide.readers.openslide_reader import OpenSlideReader
from wsi_hcc.slide.readers.pillow_reader import PillowReader, is_region_image
from wsi_hcc.slide.readers.tiff_probe import JPEG_COMPRESSIONS, TiffFacts, is_tiff_file, probe_tiff

__all__ = ["SlideReader", "open_slide", "BACKENDS", "check_slide_file"]

log = logging.getLogger(__name__)

BACKENDS = ("auto", "openslide", "tiffslide")


def _tiffslide_reader(path: Path):
    from wsi_hcc.slide.readers.tiffslide_reader import TiffSlideReader

    return TiffSlideReader(path)


# "pillow" is not a user choice: ``auto`` picks it for PNG/JPEG, and a slide's recorded backend
# (SlideInfo.backend) opens it again in the tile jobs.
_OPENERS = {"openslide": OpenSlideReader, "tiffslide": _tiffslide_reader, "pillow": PillowReader}


def check_slide_file(path: Path) -> None:
    """Fail with one line for the file problems no backend explains well."""
    if not path.exists():
        if path.is_symlink():
            raise SlideError(f"{path}: a symbolic link that leads nowhere (or back to itself); fix the link or pass "
                             "the slide file itself")
        raise SlideError(f"{path}: file not found; check the path or the manifest")
    if path.is_dir():
        raise SlideError(f"{path}: is a folder, not a slide file; pass the slide file itself (a DICOM WSI folder "
                         "holds its .dcm files), or --recursive to tile the slides inside")
    if path.stat().st_size == 0:
        raise SlideError(f"{path}: file is empty (0 bytes); copy the slide again from the scanner")


def preferred_backends(facts: TiffFacts | None, backend: str) -> tuple[str, ...]:
    """Backends to try, in order, given the file's ``probe_tiff`` facts (None: not a TIFF).

    ``auto`` prefers tiffslide for JPEG-tiled TIFFs (about 2x faster
    there) and openslide elsewhere (JPEG 2000 SVS, which tiffslide decodes slowly, and the formats
    tiffslide cannot read)."""
    if backend not in BACKENDS and backend not in _OPENERS:
        raise SlideError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return (backend,)
    if facts is not None and facts.compression in JPEG_COMPRESSIONS:
        return ("tiffslide", "openslide")
    return ("openslide", "tiffslide")


def open_slide(path: str | Path, backend: str = "auto") -> SlideReader:
    """Open a slide with ``backend`` (``auto``, ``openslide`` or ``tiffslide``).

    ``auto`` picks per file and falls back to the other backend when the first cannot open it; it
    reads PNG and JPEG region images with Pillow (one level). ``path`` may also be a folder holding
    one DICOM WSI series, read with openslide.

    Raises
    ------
    SlideError
        One line naming the file and what is wrong with it.
    """
    path = Path(path)
    if is_dicom_folder(path):
        return _open_dicom_folder(path, backend)
    check_slide_file(path)
    facts = probe_tiff(path)
    if facts is not None and facts.truncated:
        raise SlideError(f"{path}: file is truncated (its image data runs past the end of the file); "
                         "copy the slide again from the scanner")
    failures = []
    names = ("pillow",) if backend == "auto" and is_region_image(path) else preferred_backends(facts, backend)
    for name in names:
        try:
            reader = _OPENERS[name](path)
        except SlideError as exc:
            failures.append(str(exc).splitlines()[0])
            log.debug("%s: %s", path, exc)
            continue
        if reader.level_count < 1 or min(reader.dimensions) < 1:
            reader.close()
            failures.append(f"{name} found no image in it")
            continue
        return reader
    hint = ("it starts like a TIFF, so it is probably truncated or damaged; copy it again from the scanner"
            if is_tiff_file(path) else "check that it is a whole-slide image")
    raise SlideError(f"{path}: not a readable slide ({'; '.join(failures)}); {hint}")


def _open_dicom_folder(folder: Path, backend: str) -> SlideReader:
    """The folder's DICOM WSI series through openslide, which finds the series' other files beside
    the one it is given; the reader's ``path`` is the folder, the slide."""
    if backend not in ("auto", "openslide"):
        raise SlideError(f"{folder}: a DICOM WSI folder is read by openslide only; use --backend auto or openslide")
    member = series_file(folder)
    try:
        reader = OpenSlideReader(member)
    except SlideError as exc:
        raise SlideError(f"{member}: {str(exc).splitlines()[0]}; check that the folder holds the whole "
                         "DICOM WSI series") from None
    reader.path = folder
    return reader
