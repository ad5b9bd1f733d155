"""Direct access to the JPEG tiles of a TIFF pyramid level: each source tile is decoded once.

This is the fast path of the tiler. It reads the tile bytes itself (``os.pread``) and decodes them
with libjpeg-turbo (simplejpeg, or imagecodecs where simplejpeg cannot), which gives the same pixels
as openslide and tiffslide (a test checks this on a real Aperio slide). Where the tile grid
coincides with the slide's own tiles, the original bytes are handed on without decoding at all.
Where tiles are wanted at 1/2, 1/4 or 1/8 of a level's resolution, libjpeg-turbo can decode at that
scale inside the inverse DCT (``decode_scaled``), a fraction of the work of a full decode.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import SlideError
from wsi_hcc.slide.thumbnail import reduce_by

__all__ = ["JpegTileLevel", "ReducedJpegLevel", "open_jpeg_levels", "misaligned_empty"]

_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 2, 6
_JPEG = 7
# An Adobe APP14 segment with transform 0: tells libjpeg that the three components are R, G, B.
# RGB-coded tiles (Aperio) carry neither this nor a JFIF marker, so libjpeg would take them for
# YCbCr; spliced in after SOI, simplejpeg decodes them to the same pixels as imagecodecs given
# colorspace="RGB" (checked per level on its first tile, see JpegTileLevel._rgb_marker_works).
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
SCALED_DECODE_FACTORS = (2, 4, 8)


def misaligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array whose data starts 16 bytes past a 32-byte boundary.

    libjpeg-turbo decodes into and encodes from such buffers about 1.3x faster than from
    32-byte-aligned ones on this machine (measured in benchmarks/bench_tile.py's decode ceiling).
    """
    size = int(np.prod(shape))
    raw = np.empty(size + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 32 + 16
    return raw[start:start + size].reshape(shape)


class _TileCache:
    """Decoded tiles of the last few rows, least recently used first out.

    Rows, not a fixed count: tiles taller than the source tiles (or straddling their seams) then
    decode each source tile once per slide, not once per grid row.
    """

    def __init__(self, cols: int, rows: int = 2, keep_evicted: bool = False):
        self._cols = cols
        self._tiles: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        # Evicted buffers, for an owner that decodes into them again; others let them go.
        self._keep_evicted = keep_evicted
        self.spare: list[np.ndarray] = []
        self.set_rows(rows)

    def set_rows(self, rows: int) -> None:
        self._capacity = max(1, rows) * self._cols + 1

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        tile = self._tiles.get(key)
        if tile is not None:
            self._tiles.move_to_end(key)
        return tile

    def put(self, key: tuple[int, int], tile: np.ndarray) -> None:
        self._tiles[key] = tile
        if len(self._tiles) > self._capacity:
            evicted = self._tiles.popitem(last=False)[1]
            if self._keep_evicted:
                self.spare.append(evicted)


def _assemble(tile_at, tile_size: tuple[int, int], level_size: tuple[int, int],
              x: int, y: int, width: int, height: int) -> np.ndarray:
    """Copy the region ``(x, y, width, height)`` of a tiled level out of its tiles."""
    if x < 0 or y < 0 or x + width > level_size[0] or y + height > level_size[1]:
        raise ValueError(f"region {(x, y, width, height)} outside level {level_size[0]}x{level_size[1]}")
    out = np.empty((height, width, 3), dtype=np.uint8)
    tw, th = tile_size
    for row in range(y // th, (y + height - 1) // th + 1):
        ty0 = row * th
        sy0, sy1 = max(y, ty0), min(y + height, ty0 + th)
        for col in range(x // tw, (x + width - 1) // tw + 1):
            tx0 = col * tw
            sx0, sx1 = max(x, tx0), min(x + width, tx0 + tw)
            tile = tile_at(col, row)
            out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = tile[sy0 - ty0:sy1 - ty0, sx0 - tx0:sx1 - tx0]
    return out


@dataclass(frozen=True)
class _LevelLayout:
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: tuple[int, ...]
    byte_counts: tuple[int, ...]
    tables: bytes | None
    jpeg_colorspace: str | None  # "RGB" for Aperio-style RGB JPEG; None means standard YCbCr


class JpegTileLevel:
    """One pyramid level stored as JPEG tiles; coordinates are this level's pixels."""

    def __init__(self, path: Path, layout: _LevelLayout):
        self.path = Path(path)
        self._layout = layout
        self._fd = os.open(self.path, os.O_RDONLY)
        self._file_size = os.fstat(self._fd).st_size
        self._cols = -(-layout.width // layout.tile_width)
        self.cache = _TileCache(self._cols, keep_evicted=True)
        self._rgb_marker_ok: bool | None = None  # found on first use, see _rgb_marker_works

    @property
    def tile_size(self) -> tuple[int, int]:
        return self._layout.tile_width, self._layout.tile_height

    @property
    def size(self) -> tuple[int, int]:
        return self._layout.width, self._layout.height

    @property
    def jpeg_colorspace(self) -> str | None:
        return self._layout.jpeg_colorspace

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()

    def raw(self, col: int, row: int) -> bytes:
        """The tile's bytes as a complete JPEG stream (shared tables spliced in)."""
        index = row * self._cols + col
        offset, count = self._layout.offsets[index], self._layout.byte_counts[index]
        if count == 0:
            raise SlideError(f"{self.path}: tile ({col}, {row}) is missing from the file")
        if offset + count > self._file_size:
            raise SlideError(f"{self.path}: file is truncated (tile ({col}, {row}) ends past the end "
                             "of the file); copy the slide again")
        data = os.pread(self._fd, count, offset)
        tables = self._layout.tables
        if tables:
            # Abbreviated stream: tables = SOI ... EOI, tile = SOI ... EOI; join without the inner markers.
            data = tables[:-2] + data[2:]
        return data

    def checked_raw(self, col: int, row: int) -> bytes:
        """:meth:`raw`, refused in one line when the stream does not decode cleanly.

        libjpeg repairs a damaged stream with a warning ("Corrupt JPEG data: premature end of data
        segment") and imagecodecs hides the warning, so a damaged tile would be stored as if fine,
        up to 255 grey levels wrong. simplejpeg's strict mode turns those warnings into errors; its
        colours may be wrong for RGB-coded JPEG, which does not matter for a check.
        """
        data = self.raw(col, row)
        self._strict_decode(data, col, row)
        return data

    def _strict_decode(self, data: bytes, col: int, row: int, out: np.ndarray | None = None, factor: int = 8) -> None:
        """Decode strictly at 1/``factor`` scale (into ``out`` if given); a damaged stream fails in one line.

        simplejpeg scales only when given a minimum size (its ``min_factor`` alone does not), so
        the scale is asked for as the tile's size divided by ``factor``.
        """
        import simplejpeg

        tw, th = self.tile_size
        try:
            simplejpeg.decode_jpeg(data, strict=True, min_width=-(-tw // factor), min_height=-(-th // factor),
                                   buffer=out)
        except ValueError as exc:
            raise SlideError(f"{self.path}: corrupt JPEG tile ({col}, {row}) ({exc}); the file is damaged: copy it "
                             "again from the scanner's output") from None

    def decode(self, col: int, row: int) -> np.ndarray:
        """Decode one source tile to ``(tile_height, tile_width, 3)`` uint8 RGB (checked: see :meth:`checked_raw`)."""
        import imagecodecs

        key = (col, row)
        tile = self.cache.get(key)
        if tile is not None:
            return tile
        lay = self._layout
        tile = self.cache.spare.pop() if self.cache.spare else misaligned_empty((lay.tile_height, lay.tile_width, 3))
        data = self.raw(col, row)
        if lay.jpeg_colorspace in (None, "YCbCr", "YCBCR"):
            # simplejpeg gives libjpeg-turbo's pixels (identical to imagecodecs') and the check in one decode
            self._strict_decode(data, col, row, out=tile, factor=1)
        elif self._rgb_marker_works():  # RGB-coded (Aperio), told so by the Adobe marker: the same, in one decode
            self._strict_decode(data[:2] + _ADOBE_RGB + data[2:], col, row, out=tile, factor=1)
        else:  # RGB-coded, and the marker does not work here: imagecodecs decodes the colours; check separately
            self._strict_decode(data, col, row)
            try:
                imagecodecs.jpeg8_decode(data, colorspace=lay.jpeg_colorspace, outcolorspace="RGB", out=tile)
            except imagecodecs.Jpeg8Error as exc:
                raise SlideError(f"{self.path}: corrupt JPEG tile ({col}, {row}): {exc}; the file is damaged") from exc
        self.cache.put(key, tile)
        return tile

    def can_decode_scaled(self, factor: int) -> bool:
        """True when :meth:`decode_scaled` by ``factor`` gives whole tiles of correct colour."""
        tw, th = self.tile_size
        if factor not in SCALED_DECODE_FACTORS or tw % factor or th % factor:
            return False
        return self._layout.jpeg_colorspace in (None, "YCbCr", "YCBCR") or self._rgb_marker_works()

    def decode_scaled(self, col: int, row: int, factor: int, out: np.ndarray | None = None) -> np.ndarray:
        """Decode one source tile at 1/``factor`` scale in libjpeg-turbo's inverse DCT (checked like :meth:`decode`).

        Within about a grey level of decoding in full and averaging ``factor`` x ``factor`` blocks
        (tests/tiling/test_scaled_decode.py), for a fraction of the work; not cached.
        """
        if not self.can_decode_scaled(factor):
            raise ValueError(f"{self.path}: cannot decode {self.tile_size} tiles at 1/{factor} scale")
        tw, th = self.tile_size
        if out is None:
            out = misaligned_empty((th // factor, tw // factor, 3))
        data = self.raw(col, row)
        if self._layout.jpeg_colorspace == "RGB":
            data = data[:2] + _ADOBE_RGB + data[2:]
        self._strict_decode(data, col, row, out=out, factor=factor)
        return out

    def _rgb_marker_works(self) -> bool:
        """Whether simplejpeg, told by an Adobe marker that the data are RGB, decodes this level's
        first stored tile exactly as imagecodecs does (a stream with markers of its own might not)."""
        if self._rgb_marker_ok is None:
            import imagecodecs
            import simplejpeg

            index = next((i for i, count in enumerate(self._layout.byte_counts) if count), None)
            ok = False
            if index is not None:
                col, row = index % self._cols, index // self._cols
                data = self.raw(col, row)
                try:
                    expected = imagecodecs.jpeg8_decode(data, colorspace="RGB", outcolorspace="RGB")
                    ok = np.array_equal(simplejpeg.decode_jpeg(data[:2] + _ADOBE_RGB + data[2:]), expected)
                except (ValueError, imagecodecs.Jpeg8Error):
                    ok = False  # a damaged first tile: stay on the exact path, which reports it
            self._rgb_marker_ok = ok
        return self._rgb_marker_ok

    def region(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """``(height, width, 3)`` uint8 RGB of this level, top-left at level pixel ``(x, y)``."""
        return _assemble(self.decode, self.tile_size, self.size, x, y, width, height)


class ReducedJpegLevel:
    """A JpegTileLevel shrunk by an integer ``factor`` with a box mean, one source tile at a time.

    Reducing each decoded tile before assembling regions gives the same pixels as reducing the
    assembled region (tile edges are multiples of ``factor``) while moving a quarter of the data.
    With ``scaled``, each tile is instead decoded at 1/``factor`` scale (:meth:`JpegTileLevel.decode_scaled`).
    """

    def __init__(self, level: JpegTileLevel, factor: int, scaled: bool = False):
        tw, th = level.tile_size
        if factor < 2 or tw % factor or th % factor:
            raise ValueError(f"factor {factor} does not divide the {tw}x{th} tiles")
        if scaled and not level.can_decode_scaled(factor):
            raise ValueError(f"{level.path}: cannot decode at 1/{factor} scale")
        self._level = level
        self._factor = factor
        self._scaled = scaled
        self.tile_size = (tw // factor, th // factor)
        # Scaled tiles are decoded whole (edge tiles are padded), so a partial last pixel is there too.
        shrink = (lambda side: -(-side // factor)) if scaled else (lambda side: side // factor)
        self.size = (shrink(level.size[0]), shrink(level.size[1]))
        self.cache = _TileCache(-(-level.size[0] // tw), keep_evicted=scaled)
        level.cache.set_rows(1)  # each source tile is reduced once; only the reduced one is kept

    def decode(self, col: int, row: int) -> np.ndarray:
        tile = self.cache.get((col, row))
        if tile is None:
            if self._scaled:
                spare = self.cache.spare.pop() if self.cache.spare else None
                tile = self._level.decode_scaled(col, row, self._factor, out=spare)
            else:
                tile = reduce_by(self._level.decode(col, row), self._factor)
            self.cache.put((col, row), tile)
        return tile

    def region(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        return _assemble(self.decode, self.tile_size, self.size, x, y, width, height)


def open_jpeg_levels(path: str | Path, level_dimensions: tuple[tuple[int, int], ...]) -> list[JpegTileLevel | None]:
    """For each level ``(width, height)``, a JpegTileLevel if the file stores it as RGB JPEG tiles.

    Levels that are not plain JPEG-tiled TIFF pages (JPEG 2000, stripped, planar, other formats)
    get None, and the tiler reads them through the slide backend instead.
    """
    import tifffile

    path = Path(path)
    found: dict[tuple[int, int], _LevelLayout] = {}
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                layout = _jpeg_layout(page)
                if layout is not None:
                    found.setdefault((layout.width, layout.height), layout)
    except Exception:  # not a TIFF, or one tifffile cannot parse: no fast path
        return [None] * len(level_dimensions)
    return [JpegTileLevel(path, found[tuple(dims)]) if tuple(dims) in found else None
            for dims in level_dimensions]


def _jpeg_layout(page) -> _LevelLayout | None:
    if not page.is_tiled or int(page.compression) != _JPEG or page.samplesperpixel != 3:
        return None
    if page.planarconfig != 1 or page.bitspersample != 8 or page.imagedepth != 1:
        return None
    photometric = int(page.photometric)
    if photometric not in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR):
        return None
    return _LevelLayout(
        width=int(page.imagewidth), height=int(page.imagelength),
        tile_width=int(page.tilewidth), tile_height=int(page.tilelength),
        offsets=tuple(int(o) for o in page.dataoffsets), byte_counts=tuple(int(c) for c in page.databytecounts),
        tables=bytes(page.jpegtables) if page.jpegtables else None,
        jpeg_colorspace="RGB" if photometric == _PHOTOMETRIC_RGB else None,
    )
