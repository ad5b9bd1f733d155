"""What a slide file's TIFF structure says, read with tifffile without decoding pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["TiffFacts", "probe_tiff", "is_tiff_file"]

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
JPEG_COMPRESSIONS = {7}
JPEG2000_COMPRESSIONS = {33003, 33004, 33005, 34712}
_CM_PER_UNIT = {2: 2.54, 3: 1.0}  # ResolutionUnit: 2 = inch, 3 = centimetre


@dataclass(frozen=True)
class TiffFacts:
    compression: int
    resolution_mpp: tuple[float, float] | None
    truncated: bool


def is_tiff_file(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in _TIFF_MAGICS


def probe_tiff(path: Path) -> TiffFacts | None:
    """Level-0 compression and the mpp implied by the resolution tags, or None if not a TIFF."""
    import tifffile

    if not is_tiff_file(path):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            truncated = _data_past_end(tif, path.stat().st_size)
            return TiffFacts(int(page.compression), _resolution_mpp(page), truncated)
    except Exception:  # a damaged TIFF is reported by the backends, which say more
        return None


def _data_past_end(tif, file_size: int) -> bool:
    """True if any page's image data (or a page itself) lies beyond the end of the file."""
    import logging

    tifffile_log = logging.getLogger("tifffile")
    level = tifffile_log.level
    tifffile_log.setLevel(logging.CRITICAL)  # it logs the broken page chain we are about to report
    try:
        tif.pages.useframes = False
        pages = list(tif.pages)
        if tif.pages._indexed and pages and any(p is None for p in pages):
            return True
    except Exception:
        return True
    finally:
        tifffile_log.setLevel(level)
    for page in pages:
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts) if c]
        if ends and max(ends) > file_size:
            return True
    return False


def _resolution_mpp(page) -> tuple[float, float] | None:
    unit_tag = page.tags.get("ResolutionUnit")
    x_tag, y_tag = page.tags.get("XResolution"), page.tags.get("YResolution")
    if unit_tag is None or x_tag is None or y_tag is None:
        return None
    cm_per_unit = _CM_PER_UNIT.get(int(unit_tag.value))
    if cm_per_unit is None:
        return None
    mpp = []
    for tag in (x_tag, y_tag):
        num, den = tag.value
        if num <= 0 or den <= 0:
            return None
        pixels_per_unit = num / den
        mpp.append(cm_per_unit * 1e4 / pixels_per_unit)
    return mpp[0], mpp[1]
