"""What a slide file's TIFF structure says, read with tifffile without decoding pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["TiffFacts", "probe_tiff", "is_tiff_file", "ome_xml_mpp"]

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
JPEG_COMPRESSIONS = {7}
JPEG2000_COMPRESSIONS = {33003, 33004, 33005, 34712}
_CM_PER_UNIT = {2: 2.54, 3: 1.0}  # ResolutionUnit: 2 = inch, 3 = centimetre
# OME-XML UnitsLength symbols, in microns; "µm" (micro sign) is the schema's default unit, and the
# Greek mu and "um" are common spellings of it.
_UM_PER_OME_UNIT = {"m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0, "nm": 1e-3,
                    "pm": 1e-6, "Å": 1e-4, "in": 25400.0, "thou": 25.4}


@dataclass(frozen=True)
class TiffFacts:
    compression: int
    resolution_mpp: tuple[float, float] | None
    truncated: bool
    ome_mpp: tuple[float, float] | None = None  # OME-XML PhysicalSizeX/Y of the image in page 0


def is_tiff_file(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) in _TIFF_MAGICS


def probe_tiff(path: Path) -> TiffFacts | None:
    """Level-0 compression and the mpp implied by the resolution tags, or None if not a TIFF."""
    import tifffile

    if not path.is_file() or not is_tiff_file(path):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            truncated = _data_past_end(tif, path.stat().st_size)
            ome_mpp = ome_xml_mpp(tif.ome_metadata) if tif.is_ome else None
            return TiffFacts(int(page.compression), _resolution_mpp(page), truncated, ome_mpp)
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


def ome_xml_mpp(ome_xml: str) -> tuple[float, float] | None:
    """``(mpp_x, mpp_y)`` from the OME-XML ``Pixels`` of the image stored from IFD 0 (level 0), or None
    when it gives no physical size or one in a unit that is not a length."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return None
    all_pixels = root.findall("{*}Image/{*}Pixels")
    # The main image is the one whose planes start at IFD 0 (a TiffData without IFD means 0);
    # label and macro images of a converted slide come as further Images.
    level0 = [p for p in all_pixels if any(int(t.get("IFD", "0")) == 0 for t in p.findall("{*}TiffData"))]
    pixels = (level0 or all_pixels or [None])[0]
    if pixels is None:
        return None
    mpp = []
    for axis in ("X", "Y"):
        size, unit = pixels.get(f"PhysicalSize{axis}"), pixels.get(f"PhysicalSize{axis}Unit", "µm")
        if size is None or unit not in _UM_PER_OME_UNIT:
            return None
        try:
            mpp.append(float(size) * _UM_PER_OME_UNIT[unit])
        except ValueError:
            return None
    return mpp[0], mpp[1]
