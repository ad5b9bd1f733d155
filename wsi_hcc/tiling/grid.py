"""The tile grid in physical units: pure functions on numbers and arrays, no slide I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.records import TileSpec

__all__ = ["NATIVE_TOLERANCE", "plan_tile_spec", "TileGrid", "make_grid", "tissue_fractions"]

# A level whose mpp is within 1% of the target is read as it is: resampling by <1% would blur
# every tile for a size error smaller than scanner calibration error.
NATIVE_TOLERANCE = 0.01


def plan_tile_spec(level_downsamples: tuple[float, ...], slide_mpp: float, target_mpp: float,
                   tile_px: int, overlap_px: int = 0) -> TileSpec:
    """Choose the pyramid level and resampling for tiles of ``tile_px`` at ``target_mpp``.

    The level is the coarsest one at or finer than the target (within ``NATIVE_TOLERANCE``), so
    resampling only ever shrinks. Upsampling is refused: it would invent detail.
    """
    if tile_px < 8:
        raise WsiHccError(f"tile_px must be at least 8, got {tile_px}")
    if not 0 <= overlap_px < tile_px:
        raise WsiHccError(f"overlap_px must be in [0, tile_px), got {overlap_px} for tile_px {tile_px}")
    if target_mpp <= 0:
        raise WsiHccError(f"target mpp must be positive, got {target_mpp}")
    level_mpps = [slide_mpp * d for d in level_downsamples]
    candidates = [i for i, m in enumerate(level_mpps) if m <= target_mpp * (1 + NATIVE_TOLERANCE)]
    if not candidates:
        raise WsiHccError(f"target {target_mpp:g} um/px is finer than the slide's {slide_mpp:g} um/px; "
                          f"choose --mpp {slide_mpp:g} or coarser")
    level = max(candidates, key=lambda i: level_mpps[i])
    level_mpp = level_mpps[level]
    native = abs(level_mpp - target_mpp) <= NATIVE_TOLERANCE * target_mpp
    scale = 1.0 if native else target_mpp / level_mpp
    downsample = float(level_downsamples[level])
    return TileSpec(target_mpp=float(target_mpp), tile_px=int(tile_px), overlap_px=int(overlap_px),
                    level=level, level_downsample=downsample, scale=scale,
                    tile_size_level0=tile_px * scale * downsample,
                    stride_level0=(tile_px - overlap_px) * scale * downsample)


@dataclass(frozen=True)
class TileGrid:
    """Every tile position of a slide, row-major.

    Attributes
    ----------
    cols, rows : numpy.ndarray
        ``(N,)`` int64 grid indices.
    level_origins : numpy.ndarray
        ``(N, 2)`` float64 ``(x, y)`` of each tile's top-left in pixels of the read level.
    coords : numpy.ndarray
        ``(N, 2)`` int64 level-0 ``(x, y)`` of each tile's top-left (rounded).
    shape : tuple[int, int]
        ``(n_cols, n_rows)`` of the full grid.
    """

    cols: np.ndarray
    rows: np.ndarray
    level_origins: np.ndarray
    coords: np.ndarray
    shape: tuple[int, int]

    def __len__(self) -> int:
        return int(self.cols.shape[0])

    def subset(self, keep: np.ndarray) -> TileGrid:
        return TileGrid(self.cols[keep], self.rows[keep], self.level_origins[keep], self.coords[keep], self.shape)


def make_grid(level_size: tuple[int, int], spec: TileSpec) -> TileGrid:
    """All tiles that lie wholly inside a level of ``level_size`` ``(width, height)`` pixels."""
    tile_l = spec.tile_px * spec.scale
    stride_l = spec.stride_px * spec.scale
    counts = []
    for extent in level_size:
        # The epsilon keeps float noise from dropping a tile that fits exactly.
        counts.append(0 if extent + 1e-9 < tile_l else int(math.floor((extent - tile_l) / stride_l + 1e-9)) + 1)
    n_cols, n_rows = counts
    rows, cols = np.divmod(np.arange(n_cols * n_rows, dtype=np.int64), max(n_cols, 1))
    level_origins = np.stack([cols * stride_l, rows * stride_l], axis=1).astype(np.float64)
    coords = np.rint(level_origins * spec.level_downsample).astype(np.int64)
    return TileGrid(cols, rows, level_origins.reshape(-1, 2), coords.reshape(-1, 2), (n_cols, n_rows))


def tissue_fractions(mask: np.ndarray, mask_downsample: tuple[float, float], coords: np.ndarray,
                     tile_size_level0: float) -> np.ndarray:
    """Fraction of each tile covered by tissue.

    Parameters
    ----------
    mask : numpy.ndarray
        ``(H, W)`` bool tissue mask.
    mask_downsample : (float, float)
        Level-0 pixels per mask pixel along x and y.
    coords : numpy.ndarray
        ``(N, 2)`` level-0 ``(x, y)`` tile origins.
    tile_size_level0 : float
        Tile edge in level-0 pixels.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float32 in [0, 1].
    """
    if len(coords) == 0:
        return np.zeros(0, dtype=np.float32)
    integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), axis=0), axis=1)
    bounds = []
    for axis, limit in ((0, mask.shape[1]), (1, mask.shape[0])):
        start = np.rint(coords[:, axis] / mask_downsample[axis]).astype(np.int64)
        stop = np.rint((coords[:, axis] + tile_size_level0) / mask_downsample[axis]).astype(np.int64)
        stop = np.maximum(stop, start + 1)  # a tile smaller than a mask pixel still samples one
        bounds.append((np.clip(start, 0, limit), np.clip(stop, 0, limit)))
    (x0, x1), (y0, y1) = bounds
    area = (x1 - x0) * (y1 - y0)
    inside = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return np.where(area > 0, inside / np.maximum(area, 1), 0.0).astype(np.float32)
