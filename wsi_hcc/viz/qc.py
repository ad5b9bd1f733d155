"""The per-slide QC picture: thumbnail, tissue outline and kept tiles."""

from __future__ import annotations

import numpy as np

__all__ = ["render_qc"]

_OUTLINE_RGB = (0, 160, 0)
_TILE_RGB = (30, 60, 220)


def render_qc(thumbnail: np.ndarray, tissue_mask: np.ndarray, coords: np.ndarray, tile_size_level0: float,
              downsample: float) -> np.ndarray:
    """Draw the tissue outline (green) and the kept tiles' borders (blue) on a thumbnail.

    Parameters
    ----------
    thumbnail : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.
    tissue_mask : numpy.ndarray
        ``(H, W)`` bool, on the same grid as the thumbnail.
    coords : numpy.ndarray
        ``(N, 2)`` level-0 ``(x, y)`` of kept tiles.
    tile_size_level0 : float
        Tile edge in level-0 pixels.
    downsample : float
        Level-0 pixels per thumbnail pixel.

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.
    """
    from skimage.segmentation import find_boundaries

    picture = thumbnail.copy()
    height, width = picture.shape[:2]
    edge = max(1, int(round(tile_size_level0 / downsample)))
    for x, y in np.floor(coords / downsample).astype(np.int64).tolist():
        x1, y1 = min(x + edge, width) - 1, min(y + edge, height) - 1
        if x > x1 or y > y1:
            continue
        picture[y, x:x1 + 1] = picture[y1, x:x1 + 1] = _TILE_RGB
        picture[y:y1 + 1, x] = picture[y:y1 + 1, x1] = _TILE_RGB
    if tissue_mask.any():
        picture[find_boundaries(tissue_mask, mode="inner")] = _OUTLINE_RGB
    return picture
