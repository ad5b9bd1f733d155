"""Low-resolution views of a slide, read in bands so memory stays flat in slide size."""

from __future__ import annotations

import math

import numpy as np

from wsi_hcc.errors import SlideError
from wsi_hcc.slide.readers.base import SlideReader

__all__ = ["read_thumbnail", "block_mean", "reduce_by"]

_BAND_BYTES = 64 * 2**20
# Decoding 10 gigapixels takes minutes here; beyond that the slide needs a pyramid, not patience.
MAX_THUMBNAIL_SOURCE_PX = 10 * 10**9


def reduce_by(image: np.ndarray, factor: int) -> np.ndarray:
    """Pillow's ``Image.reduce(factor)`` of ``(H, W, 3)`` uint8 RGB: the rounded mean of each block.

    Halving, the common case (0.25 -> 0.5 um/px), goes through OpenCV's 2x area path, which rounds
    exactly as Pillow does ((a + b + c + d + 2) >> 2) and is several times faster; other factors
    (and odd sizes, whose ragged edge Pillow averages over the partial block) use Pillow.
    """
    if factor == 1:
        return image
    if factor == 2 and image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0:
        import cv2

        return cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).reduce(factor))


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-downsample ``(H, W, 3)`` uint8 RGB by an integer ``factor``, dropping the ragged edge."""
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    return reduce_by(image[:h, :w], factor)


def read_thumbnail(reader: SlideReader, slide_mpp: float, thumbnail_mpp: float) -> tuple[np.ndarray, float]:
    """Read the slide at about ``thumbnail_mpp``.

    Reads the coarsest level at or finer than ``thumbnail_mpp`` and block-averages it by an integer
    factor, band by band.

    Returns
    -------
    (thumbnail, downsample)
        ``(H, W, 3)`` uint8 RGB, and level-0 pixels per thumbnail pixel.
    """
    downsamples = reader.level_downsamples
    fine_enough = [i for i, d in enumerate(downsamples) if slide_mpp * d <= thumbnail_mpp * (1 + 1e-9)] or [0]
    level = max(fine_enough, key=lambda i: downsamples[i])
    level_ds = downsamples[level]
    factor = max(1, int(math.floor(thumbnail_mpp / (slide_mpp * level_ds) + 1e-9)))
    width, height = reader.level_dimensions[level]
    if width * height > MAX_THUMBNAIL_SOURCE_PX:
        raise SlideError(f"{reader.path}: the thumbnail at {thumbnail_mpp:g} um/px would be read from level {level} "
                         f"({width} x {height} px, no coarser level); add a pyramid to the slide (e.g. vips tiffsave "
                         "--pyramid --tile) or raise tissue.thumbnail_mpp")
    out_w, out_h = width // factor, height // factor
    thumb = np.empty((out_h, out_w, 3), dtype=np.uint8)
    rows_per_band = max(1, _BAND_BYTES // max(1, width * 3 * factor * factor))
    for out_y in range(0, out_h, rows_per_band):
        n = min(rows_per_band, out_h - out_y)
        band = reader.read_region((0, int(round(out_y * factor * level_ds))), level, (out_w * factor, n * factor))
        thumb[out_y:out_y + n] = block_mean(band, factor)
    return thumb, factor * level_ds
