"""tiffslide back end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_hcc.errors import SlideError
from wsi_hcc.slide.readers.base import OpenSlideLikeReader

__all__ = ["TiffSlideReader"]


class TiffSlideReader(OpenSlideLikeReader):
    """A slide read through tiffslide (tifffile + imagecodecs)."""

    backend = "tiffslide"

    def __init__(self, path: str | Path):
        import tiffslide

        self.path = Path(path)
        try:
            self._slide = tiffslide.TiffSlide(str(self.path))
            self._slide.level_dimensions  # noqa: B018 - forces parsing of the pyramid now
        except Exception as exc:  # tiffslide raises many types (TiffFileError, ValueError, KeyError...)
            raise SlideError(f"tiffslide cannot open it: {exc}") from exc

    def property_mpp(self) -> tuple[float, float] | None:
        # tiffslide gives floats, or None when the slide does not say.
        props = self._slide.properties
        mpp_x, mpp_y = props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")
        if mpp_x is None or mpp_y is None:
            return None
        return float(mpp_x), float(mpp_y)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        try:
            arr = self._slide.read_region(location, level, size, as_array=True)
        except Exception as exc:
            raise SlideError(f"tiffslide failed to read {size} at {location} level {level}: {exc}") from exc
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        elif arr.shape[2] == 4:
            arr = arr[..., :3]
        return np.ascontiguousarray(arr, dtype=np.uint8)
