"""Region images (PNG, JPEG) as one-level slides, read through Pillow."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.errors import SlideError

__all__ = ["PillowReader", "is_region_image"]

_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG
_MICRONS_PER_UNIT = {"inch": 25400.0, "cm": 10000.0}
_JFIF_UNITS = {1: "inch", 2: "cm"}  # 0: an aspect ratio only
_EXIF_UNITS = {2: "inch", 3: "cm"}  # 1: no absolute unit
_EXIF_RESOLUTION_UNIT, _EXIF_X_RESOLUTION, _EXIF_Y_RESOLUTION = 0x0128, 0x011A, 0x011B


def is_region_image(path: Path) -> bool:
    """True for a PNG or JPEG file (by its first bytes, whatever its name)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    return head.startswith(_MAGICS)


class PillowReader:
    """A PNG or JPEG region image as a slide with one level, decoded once when opened.

    Its mpp comes only from what the file states in absolute units: a PNG's ``pHYs`` chunk in pixels
    per metre, a JPEG's JFIF density or EXIF resolution in pixels per inch or centimetre.
    """

    backend = "pillow"

    def __init__(self, path: str | Path):
        from PIL import Image, UnidentifiedImageError

        self.path = Path(path)
        try:
            with Image.open(self.path) as image:
                self._format = image.format
                self._mpp = _stated_mpp(image)
                self._rgb = _to_rgb(image)
        except Image.DecompressionBombError as exc:
            raise SlideError(f"pillow will not decode an image this large ({exc}); convert it to a tiled "
                             "pyramidal TIFF (e.g. vips tiffsave --tile --pyramid)") from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise SlideError(f"pillow cannot open it: {exc}") from exc

    @property
    def level_count(self) -> int:
        return 1

    @property
    def dimensions(self) -> tuple[int, int]:
        return self._rgb.shape[1], self._rgb.shape[0]

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return (self.dimensions,)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return (1.0,)

    @property
    def properties(self) -> Mapping[str, Any]:
        props: dict[str, Any] = {"pillow.format": self._format}
        if self._mpp is not None:
            props["pillow.mpp-x"], props["pillow.mpp-y"] = self._mpp
        return props

    @property
    def vendor(self) -> str | None:
        return (self._format or "").lower() or None

    def property_mpp(self) -> tuple[float, float] | None:
        return self._mpp

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        if level != 0:
            raise SlideError(f"{self.path}: a region image has only level 0, not level {level}")
        (x, y), (width, height) = location, size
        out = np.full((height, width, 3), 255, dtype=np.uint8)  # outside the image is glass, as in openslide
        img_h, img_w = self._rgb.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, img_w), min(y + height, img_h)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self._rgb[y0:y1, x0:x1]
        return out

    def close(self) -> None:
        self._rgb = np.zeros((0, 0, 3), dtype=np.uint8)


def _to_rgb(image) -> np.ndarray:
    """8-bit RGB pixels; transparent parts become white glass, as openslide renders them."""
    from PIL import Image

    if image.mode.startswith(("I", "F")):
        raise ValueError(f"{image.mode} pixels (16-bit or float) are not a stained-slide image; save it as 8-bit RGB")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def _stated_mpp(image) -> tuple[float, float] | None:
    """Microns per pixel that the file states in an absolute unit, else None.

    Pillow's own ``info["dpi"]`` is not used for JPEG: it reads a unit-less EXIF resolution as
    inches and falls back to 72 dpi, a guess."""
    info = image.info
    if image.format == "PNG":  # Pillow sets dpi only for pHYs in pixels per metre
        dpi = info.get("dpi")
        return _microns(dpi, "inch") if dpi else None
    if image.format == "JPEG":
        unit = _JFIF_UNITS.get(info.get("jfif_unit"))
        if unit is not None:
            return _microns(info.get("jfif_density"), unit)
        exif = image.getexif()
        unit = _EXIF_UNITS.get(exif.get(_EXIF_RESOLUTION_UNIT))
        if unit is not None:
            return _microns((exif.get(_EXIF_X_RESOLUTION), exif.get(_EXIF_Y_RESOLUTION)), unit)
    return None


def _microns(pixels_per_unit, unit: str) -> tuple[float, float] | None:
    try:
        px, py = (float(v) for v in pixels_per_unit)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not (px > 0 and py > 0):
        return None
    return _MICRONS_PER_UNIT[unit] / px, _MICRONS_PER_UNIT[unit] / py
