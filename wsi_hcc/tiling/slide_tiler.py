"""The tile stage for one slide: open, describe, find tissue, plan the grid, write the store.

Crash safety: the store is built under a hidden ``.partial`` name with one done-marker per job. A
rerun after a kill keeps the jobs that finished (their chunks are complete) and redoes the rest;
the store is renamed to its final name only when every job is done, so it is identical to the
store an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from wsi_hcc.records import SlideInfo, TileSpec
from wsi_hcc.slide.info import describe_slide
from wsi_hcc.slide.thumbnail import read_thumbnail
from wsi_hcc.store.patch_store import SCHEMA_VERSION, create_store, make_codec, write_attrs
from wsi_hcc.store.tool_layouts import write_coords_files
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.extract import TileJob, can_pass_through, open_cached, run_tile_job, scaled_decode_factor
from wsi_hcc.tiling.grid import TileGrid, make_grid, plan_tile_spec, tissue_fractions
from wsi_hcc.tiling.tissue import detect_tissue
from wsi_hcc.utils.atomic import atomic_write_bytes, partial_path, publish_dir
from wsi_hcc.utils.pool import HelpedPool, run_helped
from wsi_hcc.utils.versions import stack_versions
from wsi_hcc.viz.qc import qc_png

__all__ = ["TileResult", "tile_slide", "store_path_for", "job_bounds"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int], None]
_PROGRESS_DIR = "_progress"


@dataclass(frozen=True)
class TileResult:
    """What tiling one slide produced."""

    slide: SlideInfo
    spec: TileSpec
    store_path: Path
    n_tiles: int
    n_grid: int
    pass_through: bool
    seconds: dict[str, float]
    warnings: tuple[str, ...] = field(default=())


def store_path_for(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / f"{stem}.zarr"


def tile_slide(path: str | Path, out_dir: str | Path, config: TileConfig, *, stem: str | None = None,
               mpp_override: float | None = None, mpp_source: str = "override",
               stain: dict | None = None, executor: Executor | None = None,
               on_start: Callable[[int], None] | None = None, on_tiles: ProgressCallback | None = None) -> TileResult:
    """Tile one slide into ``out_dir/<stem>.zarr`` (plus QC picture and optional CLAM/TRIDENT coords).

    Parameters
    ----------
    stain
        A fitted stain reference (``wsi_hcc.stain`` ``to_dict()``) to normalise tiles with, or None.
    executor
        Runs the tile jobs: a ``HelpedPool`` (its processes and this one), another executor (a
        dask.distributed client's, say), or None for this process alone. Outputs are identical
        whichever runs them.
    on_start, on_tiles
        Progress callbacks: total tiles once planned, then tiles written as jobs finish.
    """
    t_start = time.perf_counter()
    path = Path(path)
    stem = stem or path.stem
    out_dir = Path(out_dir)
    stat = path.stat() if path.exists() else None
    slide_stat = (stat.st_size, stat.st_mtime_ns) if stat else (0, 0)
    reader, jpeg_levels = open_cached(str(path), slide_stat, config.backend)
    slide = describe_slide(reader, mpp_override, mpp_source)
    spec = plan_tile_spec(slide.level_downsamples, slide.slide_mpp, config.target_mpp, config.tile_px,
                          config.overlap_px)
    t_open = time.perf_counter()

    selection = _select_tiles(reader, slide, spec, config)
    tiles = selection.tiles
    t_tissue = time.perf_counter()

    jpeg_level = jpeg_levels[spec.level] if config.direct_jpeg else None
    pass_through = config.pass_through and stain is None and can_pass_through(spec, jpeg_level, config.compression)
    codec = make_codec(config.compression, config.jpeg_quality,
                       jpeg_level.jpeg_colorspace if pass_through else None, config.jpeg_subsampling)
    codec_config = codec.get_config() if codec is not None else None
    decode_factor = 1 if pass_through else scaled_decode_factor(spec, jpeg_level, config.resample)

    final = store_path_for(out_dir, stem)
    tmp = partial_path(final)
    plan = _plan_digest(slide, spec, config, tiles, codec_config, pass_through, stain, decode_factor)
    _prepare_partial(tmp, plan, spec, tiles, selection.fractions, codec, config.chunk_tiles)
    jobs = _make_jobs(slide, slide_stat, config, spec, tiles, tmp, codec_config, pass_through, stain)
    if on_start:
        on_start(len(tiles))
    # The QC picture is one more job. With several workers it goes first, so that one draws it while
    # the others tile; alone, this process draws it last, after the progress bar has filled.
    qc_job = [partial(_qc_picture, slide_stat, slide, selection.mask, tiles.coords, spec, stem)] if config.qc else []
    tile_jobs = [partial(run_tile_job, job) for job in jobs]
    pictures = _run_jobs(qc_job + tile_jobs if executor is not None else tile_jobs + qc_job, executor, on_tiles)
    t_tiles = time.perf_counter()

    write_attrs(tmp, {"wsi_hcc": _store_attrs(slide, spec, config, len(tiles), selection.n_grid, pass_through,
                                              selection.mask_downsample, codec_config, stain)
                      | {"resample": _resample_record(config, decode_factor)}})
    shutil.rmtree(tmp / _PROGRESS_DIR)
    for picture in pictures:
        atomic_write_bytes(out_dir / f"{stem}.qc.png", picture)
    warnings = selection.warnings
    if config.h5:
        _, h5_warnings = write_coords_files(config.h5_layout, out_dir, stem, tiles.coords, spec, slide, stain)
        warnings += h5_warnings
    publish_dir(tmp, final)
    t_end = time.perf_counter()
    seconds = {"open": t_open - t_start, "tissue": t_tissue - t_open, "tiles": t_tiles - t_tissue,
               "finish": t_end - t_tiles, "total": t_end - t_start}
    return TileResult(slide, spec, final, len(tiles), selection.n_grid, pass_through, seconds, warnings)


@dataclass(frozen=True)
class _Selection:
    """The grid tiles kept for a slide, and the tissue mask they were chosen with."""

    tiles: TileGrid
    fractions: np.ndarray
    n_grid: int
    mask: np.ndarray
    mask_downsample: float
    warnings: tuple[str, ...]


def _select_tiles(reader, slide: SlideInfo, spec: TileSpec, config: TileConfig) -> _Selection:
    thumbnail, mask_downsample = read_thumbnail(reader, slide.slide_mpp, config.tissue.thumbnail_mpp)
    mask = detect_tissue(thumbnail, slide.slide_mpp * mask_downsample, config.tissue)
    grid = make_grid(slide.level_dimensions[spec.level], spec)
    fractions = tissue_fractions(mask, (mask_downsample, mask_downsample), grid.coords, spec.tile_size_level0)
    keep = fractions >= config.min_tissue if config.min_tissue > 0 else np.ones(len(grid), dtype=bool)
    warnings = []
    if not mask.any():
        warnings.append(f"{slide.path}: no tissue found" + ("" if keep.any() else "; wrote a store with 0 tiles"))
    elif not keep.any():
        warnings.append(f"{slide.path}: no tile reaches min_tissue={config.min_tissue}; wrote a store with 0 tiles")
    return _Selection(grid.subset(keep), fractions[keep], len(grid), mask, mask_downsample, tuple(warnings))


def _resample_record(config: TileConfig, decode_factor: int) -> dict:
    """Which path made the tiles: ``scaled`` only where JPEG tiles were decoded at 1/``decode_factor``."""
    return {"requested": config.resample, "used": "scaled" if decode_factor > 1 else "exact",
            "jpeg_decode_factor": decode_factor}


def _plan_digest(slide: SlideInfo, spec: TileSpec, config: TileConfig, tiles: TileGrid,
                 codec_config, pass_through: bool, stain: dict | None, decode_factor: int = 1) -> str:
    digest = hashlib.sha256(json.dumps(
        [slide.fingerprint, spec.to_dict(), config.model_dump(mode="json"), codec_config, pass_through,
         stain, len(tiles), decode_factor], sort_keys=True).encode())
    digest.update(tiles.coords.tobytes())
    return digest.hexdigest()


def _prepare_partial(tmp: Path, plan: str, spec: TileSpec, tiles: TileGrid, fractions: np.ndarray, codec,
                     chunk_tiles: int) -> None:
    """Reuse a partial store written by the same plan; otherwise start it afresh."""
    plan_file = tmp / _PROGRESS_DIR / "plan"
    if plan_file.exists() and plan_file.read_text() == plan:
        log.info("%s: resuming", tmp)
        return
    if tmp.exists():
        shutil.rmtree(tmp)
    create_store(tmp, spec.tile_px, tiles.coords, fractions, codec, chunk_tiles)
    (tmp / _PROGRESS_DIR).mkdir()
    plan_file.write_text(plan)


def _make_jobs(slide: SlideInfo, slide_stat, config: TileConfig, spec: TileSpec, tiles: TileGrid, tmp: Path,
               codec_config, pass_through: bool, stain: dict | None) -> list[TileJob]:
    """The slide's jobs (:func:`job_bounds`), less those already done."""
    jobs = []
    for lo, hi in job_bounds(len(tiles), config.job_tiles, config.chunk_tiles):
        # Named by its tiles, so a marker never vouches for tiles another job rule would give it.
        marker = tmp / _PROGRESS_DIR / f"job-{lo:09d}-{hi:09d}.done"
        if marker.exists():
            continue
        jobs.append(TileJob(
            slide_path=slide.path, slide_stat=slide_stat, backend=slide.backend, direct_jpeg=config.direct_jpeg,
            spec=spec, store_path=str(tmp), codec_config=codec_config, pass_through=pass_through,
            first_index=lo, cols=tiles.cols[lo:hi], rows=tiles.rows[lo:hi],
            level_origins=tiles.level_origins[lo:hi], done_marker=str(marker), stain=stain,
            resample=config.resample, chunk_tiles=config.chunk_tiles))
    return jobs


def job_bounds(n_tiles: int, job_tiles: int, chunk_tiles: int) -> list[tuple[int, int]]:
    """``(first, stop)`` tile indices of a slide's jobs: ``job_tiles`` tiles each (whole chunks, so no
    two jobs write one chunk file), and at the end jobs of half the rest each, down to one chunk, so
    that the workers run out of work together rather than one finishing a full job alone. The rule
    depends on the slide and the config only: outputs and resume markers do not depend on the
    number of workers."""
    whole_chunks = lambda count: -(-count // chunk_tiles) * chunk_tiles  # noqa: E731
    step = whole_chunks(job_tiles)
    bounds = []
    first = 0
    while first < n_tiles:
        rest = n_tiles - first
        size = step if rest > 2 * step else min(step, max(chunk_tiles, whole_chunks(rest // 2)))
        bounds.append((first, min(n_tiles, first + size)))
        first += size
    return bounds


def _run_jobs(jobs: list[Callable[[], int | bytes]], executor: Executor | None,
              on_tiles: ProgressCallback | None) -> list[bytes]:
    """Run the jobs; tile jobs return their tile count (reported to ``on_tiles``), the QC job its
    picture (returned)."""
    pictures: list[bytes] = []

    def take(result: int | bytes) -> None:
        if isinstance(result, bytes):
            pictures.append(result)
        elif on_tiles:
            on_tiles(result)

    if isinstance(executor, HelpedPool):
        run_helped(jobs, executor, take)
    elif executor is None:
        for job in jobs:
            take(job())
    else:
        futures = [executor.submit(job) for job in jobs]
        try:
            for future in as_completed(futures):
                take(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return pictures


def _store_attrs(slide: SlideInfo, spec: TileSpec, config: TileConfig, n_tiles: int, n_grid: int,
                 pass_through: bool, thumb_downsample: float, codec_config, stain: dict | None) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "patch-store",
        "n_tiles": n_tiles,
        "n_grid_tiles": n_grid,
        "tile_spec": spec.to_dict(),
        "slide": slide.to_dict(),
        "tiles_codec": codec_config,
        "pass_through": pass_through,
        "stain_reference": stain,
        "tissue_mask_downsample": thumb_downsample,
        "config": config.model_dump(mode="json"),
        "versions": stack_versions(),
    }


_QC_LONG_SIDE_PX = 1024


def _qc_picture(slide_stat: tuple[int, int], slide: SlideInfo, mask: np.ndarray, coords: np.ndarray,
                spec: TileSpec, stem: str) -> bytes:
    """The QC picture as PNG bytes, drawn at about 1024 px on its long side (never finer than level 0):
    tile borders stay visible on small slides, and a palette PNG of that size stays well under 500 kB.

    A plain function of picklable records, so a worker process can draw it while others tile.
    """
    from PIL import Image

    reader, _ = open_cached(slide.path, slide_stat, slide.backend)
    qc_mpp = slide.slide_mpp * math.ceil(max(slide.dimensions) / _QC_LONG_SIDE_PX)
    picture, downsample = read_thumbnail(reader, slide.slide_mpp, qc_mpp)
    height, width = picture.shape[:2]
    if mask.shape != (height, width):
        mask = np.asarray(Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST))
    return qc_png(picture, mask, coords, downsample, stem, slide, spec)
