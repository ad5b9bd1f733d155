"""A Deep Zoom tile pyramid over any of our slide readers, read on demand.

Deep Zoom level ``L`` of ``n`` (``n - 1`` is full resolution) is the slide shrunk by ``2**(n - 1 - L)``,
cut into ``tile_px`` squares (edge tiles smaller, no overlap). A tile is read from the coarsest slide
level at or finer than its scale and shrunk with area interpolation; at full resolution it is the
slide's level-0 pixels unchanged. Reads go band by band, so a coarse tile of a slide without a
pyramid never holds more than about 64 MiB of source pixels: memory stays flat in slide size.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from wsi_hcc.errors import SlideError
from wsi_hcc.slide.readers.base import SlideReader

__all__ = ["DeepZoomGrid", "DeepZoomPyramid", "dzi_xml"]

_BAND_BYTES = 64 * 2**20


@dataclass(frozen=True)
class DeepZoomGrid:
    """The pyramid's geometry for a level-0 ``(width, height)``: pure arithmetic, no slide."""

    width: int
    height: int
    tile_px: int = 256

    @property
    def level_count(self) -> int:
        return int(math.ceil(math.log2(max(self.width, self.height, 1)))) + 1

    def scale(self, level: int) -> int:
        """Level-0 pixels per pixel of Deep Zoom ``level``."""
        return 2 ** (self.level_count - 1 - level)

    def level_size(self, level: int) -> tuple[int, int]:
        s = self.scale(level)
        return max(1, -(-self.width // s)), max(1, -(-self.height // s))

    def tile_count(self, level: int) -> tuple[int, int]:
        w, h = self.level_size(level)
        return -(-w // self.tile_px), -(-h // self.tile_px)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the tile in the level's pixels; ValueError outside the pyramid."""
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} is outside 0..{self.level_count - 1}")
        cols, rows = self.tile_count(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise ValueError(f"tile {col}_{row} is outside level {level}'s {cols} x {rows} tiles")
        w, h = self.level_size(level)
        x, y = col * self.tile_px, row * self.tile_px
        return x, y, min(self.tile_px, w - x), min(self.tile_px, h - y)


def dzi_xml(grid: DeepZoomGrid, image_format: str = "jpeg") -> str:
    """The ``.dzi`` descriptor (Deep Zoom's XML, as OpenSeadragon and others read it)."""
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="{image_format}" Overlap="0" '
            f'TileSize="{grid.tile_px}"><Size Width="{grid.width}" Height="{grid.height}"/></Image>\n')


class DeepZoomPyramid:
    """Tiles of one opened slide; reads are serialised (not every backend reads from two threads)."""

    def __init__(self, reader: SlideReader, tile_px: int = 256):
        self.reader = reader
        width, height = reader.dimensions
        self.grid = DeepZoomGrid(int(width), int(height), tile_px)
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the reader once no tile is being read from it."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.reader.close()

    def tile(self, level: int, col: int, row: int) -> np.ndarray:
        """``(h, w, 3)`` uint8 RGB of the tile."""
        x, y, w, h = self.grid.tile_box(level, col, row)
        scale = self.grid.scale(level)
        x0, y0 = x * scale, y * scale
        w0, h0 = min(w * scale, self.grid.width - x0), min(h * scale, self.grid.height - y0)
        slide_level = self._best_level(scale)
        level_ds = self.reader.level_downsamples[slide_level]
        with self._lock:
            if self._closed:
                raise SlideError(f"{self.reader.path}: closed to make room for other slides; reload the page")
            if slide_level == 0 and scale == 1:
                return self.reader.read_region((x0, y0), 0, (w0, h0))
            return self._read_shrunk(x0, y0, w0, h0, slide_level, level_ds, w, h)

    def _best_level(self, scale: float) -> int:
        downsamples = self.reader.level_downsamples
        fine_enough = [i for i, d in enumerate(downsamples) if d <= scale * (1 + 1e-6)] or [0]
        return max(fine_enough, key=lambda i: downsamples[i])

    def _read_shrunk(self, x0: int, y0: int, w0: int, h0: int, slide_level: int, level_ds: float,
                     out_w: int, out_h: int) -> np.ndarray:
        """Level-0 box ``(x0, y0, w0, h0)`` read at ``slide_level`` and shrunk to ``(out_w, out_h)``,
        in bands of output rows so the source held at once stays under ``_BAND_BYTES``."""
        import cv2

        src_w = max(1, int(math.ceil(w0 / level_ds)))
        src_h = max(1, int(math.ceil(h0 / level_ds)))
        rows_per_out = src_h / out_h
        band_rows = max(1, int(_BAND_BYTES // max(1, src_w * 3 * rows_per_out)))
        out = np.empty((out_h, out_w, 3), dtype=np.uint8)
        for top in range(0, out_h, band_rows):
            bottom = min(out_h, top + band_rows)
            src_top = int(round(top * rows_per_out))
            src_bottom = max(src_top + 1, min(src_h, int(round(bottom * rows_per_out))))
            band = self.reader.read_region((x0, y0 + int(round(src_top * level_ds))), slide_level,
                                           (src_w, src_bottom - src_top))
            out[top:bottom] = cv2.resize(band, (out_w, bottom - top), interpolation=cv2.INTER_AREA)
        return out
