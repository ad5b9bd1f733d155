"""openslide back end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_hcc.errors import SlideError
from wsi_hcc.slide.readers.base import OpenSlideLikeReader

__all__ = ["OpenSlideReader"]


class OpenSlideReader(OpenSlideLikeReader):
    """A slide read through openslide-python (with the openslide-bin library)."""

    backend = "openslide"

    def __init__(self, path: str | Path):
        import openslide

        self.path = Path(path)
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except (openslide.OpenSlideError, OSError, ValueError) as exc:
            raise SlideError(f"openslide cannot open it: {exc}") from exc
        self._error_type = openslide.OpenSlideError

    def property_mpp(self) -> tuple[float, float] | None:
        # openslide gives strings, and omits the keys when the slide does not say.
        props = self._slide.properties
        try:
            return float(props["openslide.mpp-x"]), float(props["openslide.mpp-y"])
        except (KeyError, ValueError):
            return None

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        try:
            rgba = np.asarray(self._slide.read_region(location, level, size))
        except self._error_type as exc:
            raise SlideError(f"openslide failed to read {size} at {location} level {level}: {exc}") from exc
        rgb = rgba[..., :3].copy()
        # openslide returns transparent black outside scanned areas; glass is white.
        rgb[rgba[..., 3] == 0] = 255
        return rgb
