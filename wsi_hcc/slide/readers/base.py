"""The reader protocol: openslide's vocabulary, numpy RGB out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["SlideReader", "OpenSlideLikeReader"]


@runtime_checkable
class SlideReader(Protocol):
    """A whole-slide image opened by one backend.

    Positions are level-0 ``(x, y)`` pixels and sizes ``(width, height)``, as in openslide.
    """

    backend: str
    path: Path

    @property
    def level_count(self) -> int: ...

    @property
    def dimensions(self) -> tuple[int, int]: ...

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]: ...

    @property
    def level_downsamples(self) -> tuple[float, ...]: ...

    @property
    def properties(self) -> Mapping[str, Any]: ...

    @property
    def vendor(self) -> str | None: ...

    def property_mpp(self) -> tuple[float, float] | None:
        """``(mpp_x, mpp_y)`` from the backend's metadata, or None when it has none."""

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Read ``size`` pixels of ``level`` whose top-left is level-0 ``location``.

        Returns
        -------
        numpy.ndarray
            ``(height, width, 3)`` uint8 RGB.
        """

    def close(self) -> None: ...


class OpenSlideLikeReader:
    """Shared part of back ends whose slide object already speaks openslide's vocabulary
    (openslide.OpenSlide and tiffslide.TiffSlide): the pyramid, the properties and close."""

    backend: str
    path: Path
    _slide: Any

    @property
    def level_count(self) -> int:
        return self._slide.level_count

    @property
    def dimensions(self) -> tuple[int, int]:
        return tuple(self._slide.dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(tuple(d) for d in self._slide.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self._slide.level_downsamples)

    @property
    def properties(self) -> Mapping[str, Any]:
        return self._slide.properties

    @property
    def vendor(self) -> str | None:
        return self._slide.properties.get(f"{self.backend}.vendor")

    def close(self) -> None:
        self._slide.close()
