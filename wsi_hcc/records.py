"""Small frozen records that the pipeline stages exchange.

Conventions: positions are level-0 ``(x, y)`` pixels, sizes are ``(width, height)``, and units are
part of every name (``tile_px``, ``target_mpp``, ``slide_mpp``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["SlideInfo", "TileSpec", "as_boxes"]


@dataclass(frozen=True)
class SlideInfo:
    """What the tiler needs to know about one slide, and what every output records of it.

    Attributes
    ----------
    path : str
        Absolute path of the slide file, or of the folder holding a DICOM WSI series.
    fingerprint : str
        ``sha256:<hex>`` of the file's size and sampled bytes (of every file, for a DICOM folder);
        changes whenever the file does.
    dimensions : tuple[int, int]
        Level-0 ``(width, height)`` in pixels.
    level_dimensions, level_downsamples
        Per pyramid level, as the backend reports them.
    slide_mpp : float
        Level-0 microns per pixel (x and y are required to agree within 1%).
    mpp_source : str
        Where ``slide_mpp`` came from: ``"properties"`` (the backend's metadata; for PNG/JPEG the
        ``pHYs`` chunk or JFIF/EXIF density), ``"ome-xml"`` (OME-TIFF ``PhysicalSizeX/Y``),
        ``"tiff-resolution"``, ``"override"`` or ``"manifest"``.
    vendor : str or None
        Vendor named by the backend (``"aperio"``, ``"generic-tiff"``, ``"dicom"``, ``"png"``, ...).
    backend : str
        ``"openslide"``, ``"tiffslide"`` or ``"pillow"`` (PNG/JPEG region images).
    synthetic : bool
        Made by ``wsi_hcc.synth``, not scanned: models trained only on such slides say so.
    """

    path: str
    fingerprint: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    slide_mpp: float
    mpp_source: str
    vendor: str | None
    backend: str
    synthetic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SlideInfo:
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**{**data, "dimensions": tuple(data["dimensions"]),
                      "level_dimensions": tuple(tuple(d) for d in data["level_dimensions"]),
                      "level_downsamples": tuple(data["level_downsamples"])})


@dataclass(frozen=True)
class TileSpec:
    """How tiles are cut from one slide.

    A tile covers exactly ``tile_px * target_mpp`` microns. It is read from pyramid level ``level``
    (downsample ``level_downsample``), where it spans ``tile_px * scale`` level pixels; ``scale`` is
    exactly 1.0 when the level is within 1% of the target and is read natively.

    Attributes
    ----------
    target_mpp : float
        Microns per pixel of the stored tiles (exactly as requested, even when read natively).
    tile_px, overlap_px : int
        Tile edge and overlap between neighbours, in output pixels.
    level : int
        Pyramid level the pixels are read from.
    level_downsample : float
        That level's downsample relative to level 0.
    scale : float
        Level pixels per output pixel (>= 1; 1.0 means native, no resampling).
    tile_size_level0 : float
        Tile edge in level-0 pixels.
    stride_level0 : float
        Distance between neighbouring tile origins in level-0 pixels.
    """

    target_mpp: float
    tile_px: int
    overlap_px: int
    level: int
    level_downsample: float
    scale: float
    tile_size_level0: float
    stride_level0: float

    @property
    def native(self) -> bool:
        return self.scale == 1.0

    @property
    def stride_px(self) -> int:
        return self.tile_px - self.overlap_px

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self)) | {"native": self.native}

    def tile_boxes(self, coords: np.ndarray) -> np.ndarray:
        """``(N, 4)`` float64 level-0 ``(x0, y0, x1, y1)`` of the area each tile of this grid covers.

        Stored coords are the grid's exact origins rounded to whole pixels, while a tile spans
        ``tile_size_level0`` (64.13 px for 32 px at 1 um/px on a 0.499 um/px slide): squares drawn
        from the rounded corners leave sub-pixel gaps and overlaps between neighbours, which break
        the union of a class's tiles into pieces. Here every edge is the exact grid line rounded to
        a whole pixel, computed from the line's index alone: a box starts at its stored coordinate,
        without overlap it ends exactly where the next tile starts (shared edge, no gap), and no
        edge is more than half a pixel from the exact one. Coords that are not on this grid (read
        from another tool's file) keep squares of ``tile_size_level0`` at their corners.
        """
        coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        lines = np.rint(coords / self.stride_level0)
        if not np.all(np.abs(lines * self.stride_level0 - coords) <= 0.5 + 1e-6):
            return as_boxes(coords, self.tile_size_level0)
        start_px = lines * self.stride_px  # whole output pixels from the slide's origin
        level0_per_px = self.tile_size_level0 / self.tile_px
        return np.rint(np.concatenate([start_px, start_px + self.tile_px], axis=1) * level0_per_px)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TileSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def as_boxes(coords: np.ndarray, tile_size_level0: float | None = None) -> np.ndarray:
    """Tiles as ``(N, 4)`` float64 ``(x0, y0, x1, y1)`` boxes: ``coords`` is either ``(N, 2)``
    top-left corners of squares of ``tile_size_level0``, or already ``(N, 4)`` boxes (then the
    size is not needed), e.g. from ``TileSpec.tile_boxes``."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim == 2 and coords.shape[1] == 4:
        return coords
    coords = coords.reshape(-1, 2)
    if tile_size_level0 is None:
        raise ValueError("tile corners need tile_size_level0; or pass (N, 4) boxes")
    return np.concatenate([coords, coords + float(tile_size_level0)], axis=1)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
