"""Cut tiles from a slide and write them into a store's chunk files: the tiler's inner loop.

A ``TileJob`` is a run of consecutive tiles (whole chunks of the store) that one process reads,
encodes and writes on its own. Jobs are plain picklable records, so the same job runs in-process, in a local
process pool or on a dask.distributed worker, and gives byte-identical chunks in each.
"""

from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.records import TileSpec
from wsi_hcc.slide.jpeg_tiles import (
    SCALED_DECODE_FACTORS,
    JpegTileLevel,
    ReducedJpegLevel,
    misaligned_empty,
    open_jpeg_levels,
)
from wsi_hcc.slide.readers import open_slide
from wsi_hcc.slide.readers.base import SlideReader
from wsi_hcc.slide.thumbnail import reduce_by
from wsi_hcc.stain.normalizers import normalizer_from_dict
from wsi_hcc.store.patch_store import chunk_bytes, chunk_path, codec_from_config

__all__ = ["TileJob", "run_tile_job", "can_pass_through", "open_cached", "warm_up", "scaled_decode_factor"]

# Regions are read a few tiles at a time: large enough to amortise per-call overhead, small
# enough that memory stays flat in slide size.
_MAX_RUN_TILES = 16


@dataclass(frozen=True)
class TileJob:
    """Tiles ``first_index ..`` of one slide, in store order: whole chunks of ``chunk_tiles`` tiles
    (the last chunk of the store may be shorter), so no two jobs write one file.

    ``level_origins`` are the ``(x, y)`` top-left corners in pixels of ``spec.level``; ``cols`` and
    ``rows`` are the grid indices (used by the pass-through path).
    """

    slide_path: str
    slide_stat: tuple[int, int]  # (size, mtime_ns): keys the per-process reader cache
    backend: str
    direct_jpeg: bool
    spec: TileSpec
    store_path: str
    codec_config: dict[str, Any] | None
    pass_through: bool
    first_index: int
    cols: np.ndarray
    rows: np.ndarray
    level_origins: np.ndarray
    done_marker: str
    stain: dict[str, Any] | None = None  # fitted stain reference (wsi_hcc.stain), applied before encoding
    resample: str = "exact"  # "scaled": decode JPEG tiles at 1/2, 1/4 or 1/8 scale where the tiles allow
    chunk_tiles: int = 1  # tiles per chunk file of the store

    def __len__(self) -> int:
        return int(self.cols.shape[0])


@lru_cache(maxsize=4)
def open_cached(path: str, stat: tuple[int, int], backend: str) -> tuple[SlideReader, list[JpegTileLevel | None]]:
    """Open a slide once per process; ``stat`` (size, mtime_ns) makes a changed file open afresh."""
    reader = open_slide(path, backend)
    return reader, open_jpeg_levels(path, reader.level_dimensions)


def warm_up() -> None:
    """Import what a job needs, so that a fresh worker process is ready before the first job."""
    import imagecodecs  # noqa: F401
    import openslide  # noqa: F401
    import tifffile  # noqa: F401
    import tiffslide  # noqa: F401
    from PIL import Image  # noqa: F401


def grid_matches_source_tiles(spec: TileSpec, jpeg_level: JpegTileLevel | None) -> bool:
    """True when each grid tile is exactly one of the slide's own JPEG tiles: native resolution,
    no overlap, and the slide's tile size equal to ``tile_px``."""
    return (jpeg_level is not None and spec.native and spec.overlap_px == 0
            and jpeg_level.tile_size == (spec.tile_px, spec.tile_px))


def can_pass_through(spec: TileSpec, jpeg_level: JpegTileLevel | None, compression: str) -> bool:
    """True when the slide's own JPEG bytes can be stored unchanged as the tiles."""
    return compression == "jpeg" and grid_matches_source_tiles(spec, jpeg_level)


def scaled_decode_factor(spec: TileSpec, jpeg_level: JpegTileLevel | None, resample: str) -> int:
    """The scale (2, 4 or 8) at which to decode the level's JPEG tiles, or 1 for a full decode.

    With ``resample="scaled"``: the largest of 2, 4, 8 that divides the source tiles and leaves a
    whole number for the rest of the tile's scale (a block mean then, on whole scaled pixels).
    Where it would leave a fraction (a 0.252 um/px slide at 0.5 um/px: 1.984; 3x: 1.5), the rest
    would be resampled on the scaled pixels' grid, twice as coarse as the full decode's, and lands
    up to half a pixel off: 0.8 to 4.2 grey levels for the median tile of the real Aperio slide,
    against 0.1 where the rest is whole (benchmarks/RESULTS.md). Such tiles take the full decode.
    """
    if resample != "scaled" or jpeg_level is None:
        return 1
    whole = lambda value: value >= 1 and abs(value - round(value)) < 1e-9  # noqa: E731
    fits = [f for f in SCALED_DECODE_FACTORS if whole(spec.scale / f) and jpeg_level.can_decode_scaled(f)]
    return max(fits, default=1)


def run_tile_job(job: TileJob) -> int:
    """Write the job's tiles into the store, then its done-marker. Returns the number of tiles."""
    reader, jpeg_levels = open_cached(job.slide_path, job.slide_stat, job.backend)
    jpeg_level = jpeg_levels[job.spec.level] if job.direct_jpeg else None
    pairs = zip(job.cols.tolist(), job.rows.tolist())
    if job.pass_through:
        assert jpeg_level is not None, "pass-through planned for a level without JPEG tiles"
        encoded = ((job.first_index + i, jpeg_level.checked_raw(col, row)) for i, (col, row) in enumerate(pairs))
    else:
        encode = _encoder(job.codec_config, job.spec.tile_px, job.stain)
        if grid_matches_source_tiles(job.spec, jpeg_level):
            tiles = ((job.first_index + i, jpeg_level.decode(col, row)) for i, (col, row) in enumerate(pairs))
        else:
            tiles = _cut_tiles(job, *_tile_source(job, jpeg_level, reader))
        encoded = ((index, encode(tile)) for index, tile in tiles)
    with _ChunkWriter(Path(job.store_path), job.chunk_tiles) as write:
        for index, data in encoded:
            write(index, data)
    Path(job.done_marker).touch()
    return len(job)


def _encoder(codec_config: dict[str, Any] | None, tile_px: int, stain: dict[str, Any] | None):
    """Chunk bytes for a tile, stain-normalised first when ``stain`` holds a fitted reference.

    Tiles are staged in a contiguous, misaligned buffer: the codecs need contiguous input, and
    libjpeg-turbo encodes faster from such a buffer.
    """
    codec = codec_from_config(codec_config)
    normalize = normalizer_from_dict(stain).transform if stain is not None else None
    staging = misaligned_empty((tile_px, tile_px, 3))

    def encode(tile: np.ndarray) -> bytes:
        staging[...] = normalize(np.ascontiguousarray(tile)) if normalize is not None else tile
        return codec.encode(staging) if codec is not None else staging.tobytes()

    return encode


class _ChunkWriter:
    """Gathers encoded tiles into chunks of ``chunk_tiles`` and writes each chunk file on one
    background thread.

    Creating a file can block on the file system (journal commits, write-back throttling); the
    thread overlaps that wait with the work, and a chunk of many tiles makes it rare. All writes
    have finished, and any error has been raised, when the ``with`` block ends.
    """

    def __init__(self, store: Path, chunk_tiles: int, max_pending: int = 4):
        from concurrent.futures import ThreadPoolExecutor

        self._store = store
        self._chunk_tiles = chunk_tiles
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._pending: deque = deque()
        self._chunk: int | None = None
        self._tiles: list[bytes] = []

    def __enter__(self):
        return self

    def __call__(self, index: int, data: bytes) -> None:
        chunk, slot = divmod(index, self._chunk_tiles)
        if chunk != self._chunk:
            self._flush()
            self._chunk = chunk
        if slot != len(self._tiles):
            raise ValueError(f"tile {index} out of order in chunk {chunk}")
        self._tiles.append(data)
        if len(self._tiles) == self._chunk_tiles:
            self._flush()

    def _flush(self) -> None:
        if not self._tiles:
            return
        tiles, self._tiles = self._tiles, []
        data = chunk_bytes(tiles, self._chunk_tiles)
        self._pending.append(self._pool.submit(_write, self._store, self._chunk, data))
        if len(self._pending) > self._max_pending:
            self._pending.popleft().result()

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self._flush()
                while self._pending:
                    self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
        return False


def _write(store: Path, chunk: int, data: bytes) -> None:
    fd = os.open(chunk_path(store, chunk), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:  # a large write may be split by the kernel
            written = os.write(fd, view)
            if written <= 0:
                raise OSError(f"short write to {chunk_path(store, chunk)}; is the disk full?")
            view = view[written:]
    finally:
        os.close(fd)


def _reader_region(reader: SlideReader, spec: TileSpec):
    downsample = spec.level_downsample

    def read(x: int, y: int, width: int, height: int) -> np.ndarray:
        location = (int(round(x * downsample)), int(round(y * downsample)))
        return reader.read_region(location, spec.level, (width, height))

    return read


def _runs(job: TileJob):
    """Split the job into runs of neighbouring tiles in one grid row, at most _MAX_RUN_TILES long."""
    start = 0
    n = len(job)
    cols, rows = job.cols, job.rows
    for i in range(1, n + 1):
        if (i == n or rows[i] != rows[start] or cols[i] != cols[i - 1] + 1 or i - start >= _MAX_RUN_TILES):
            yield start, i
            start = i


def _tile_source(job: TileJob, jpeg_level: JpegTileLevel | None, reader: SlideReader):
    """Where the job's pixels come from: ``(read, level_size, origins, scale)``.

    Preference: with ``resample="scaled"``, the slide's JPEG tiles decoded at 1/2, 1/4 or 1/8
    scale, the rest of the scale done on those; else the JPEG tiles shrunk per tile when the scale
    is an integer that divides them (the usual 0.25 -> 0.5 um/px case), else the JPEG tiles, else
    the backend's read_region.
    """
    spec = job.spec
    origins = job.level_origins
    decode_factor = scaled_decode_factor(spec, jpeg_level, job.resample)
    if decode_factor > 1:
        scaled = ReducedJpegLevel(jpeg_level, decode_factor, scaled=True)
        rest = spec.scale / decode_factor  # whole (scaled_decode_factor): snap away float noise
        rest = float(round(rest)) if abs(rest - round(rest)) < 1e-9 else rest
        scaled.cache.set_rows(math.ceil(spec.tile_px * rest / scaled.tile_size[1]) + 1)
        return scaled.region, scaled.size, origins / decode_factor, rest
    factor = int(spec.scale)
    if (jpeg_level is not None and factor >= 2 and factor == spec.scale
            and all(side % factor == 0 for side in jpeg_level.tile_size) and np.all(origins % factor == 0)):
        reduced = ReducedJpegLevel(jpeg_level, factor)
        reduced.cache.set_rows(math.ceil(spec.tile_px / reduced.tile_size[1]) + 1)
        return reduced.region, reduced.size, origins / factor, 1.0
    if jpeg_level is not None:
        jpeg_level.cache.set_rows(math.ceil(spec.tile_px * spec.scale / jpeg_level.tile_size[1]) + 1)
        return jpeg_level.region, jpeg_level.size, origins, spec.scale
    return _reader_region(reader, spec), reader.level_dimensions[spec.level], origins, spec.scale


def _cut_tiles(job: TileJob, read, level_size: tuple[int, int], level_origins: np.ndarray, scale: float):
    """Yield ``(index, tile)`` for the job, reading one region per run of neighbouring tiles.

    ``level_origins`` are tile corners in the pixels ``read`` serves; ``scale`` is source pixels
    per output pixel there (1.0: cut without resampling).
    """
    tile_px = job.spec.tile_px
    tile_l = tile_px * scale
    for start, stop in _runs(job):
        origins = level_origins[start:stop]
        x0 = int(math.floor(origins[0, 0]))
        y0 = int(math.floor(origins[0, 1]))
        x1 = min(level_size[0], int(math.ceil(origins[-1, 0] + tile_l)))
        y1 = min(level_size[1], int(math.ceil(origins[0, 1] + tile_l)))
        region = read(x0, y0, x1 - x0, y1 - y0)
        if scale == 1.0:
            for k, (ox, oy) in enumerate(origins.astype(np.int64).tolist()):
                yield job.first_index + start + k, region[oy - y0:oy - y0 + tile_px, ox - x0:ox - x0 + tile_px]
        else:
            from PIL import Image

            factor = int(scale)
            # An integer factor on integer origins is a plain block mean (reduce_by), about 4x
            # faster than a general box resize, with the same result.
            integral = factor == scale and np.all(origins == np.floor(origins))
            image = None if integral else Image.fromarray(region)
            for k, (ox, oy) in enumerate(origins.tolist()):
                if integral:
                    x, y = int(ox) - x0, int(oy) - y0
                    tile = reduce_by(region[y:y + int(tile_l), x:x + int(tile_l)], factor)
                else:
                    box = (ox - x0, oy - y0, ox - x0 + tile_l, oy - y0 + tile_l)
                    tile = np.asarray(image.resize((tile_px, tile_px), Image.Resampling.BOX, box=box))
                yield job.first_index + start + k, tile
