"""``wsi-hcc tile`` as a batch: slides in, one patch store per slide out, locally or on dask.distributed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.slide.info import slide_fingerprint
from wsi_hcc.store.feature_array import read_store_meta, store_records
from wsi_hcc.store.patch_store import open_store
from wsi_hcc.store.tool_layouts import coords_file_path, write_coords_files
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.inputs import SlideTask, collect_slides, find_stem_collisions
from wsi_hcc.tiling.slide_tiler import store_path_for, tile_slide
from wsi_hcc.utils.locks import LockHeld, output_lock
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.runs import BatchReport, SlideOutcome, StateFiles, prepare_out_dir, run_items, write_manifest
from wsi_hcc.utils.versions import utc_now
from wsi_hcc.utils.words import counted

__all__ = ["run_tile", "make_executor", "fit_stain_reference", "TilePlan", "plan_tiles", "tile_task",
           "write_tile_manifest"]

log = logging.getLogger(__name__)


@contextmanager
def make_executor(workers: int = 1, scheduler: str | None = None) -> Iterator[Executor | None]:
    """``workers`` processes (this one and ``workers - 1`` children), a dask.distributed client for
    ``scheduler``, else None."""
    if scheduler:
        from wsi_hcc.pipelines.cluster import connect

        client = connect(scheduler)
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
        return
    if workers < 2:
        yield None
        return
    from wsi_hcc.tiling.extract import warm_up
    from wsi_hcc.utils.pool import HelpedPool

    # workers - 1 children: this process tiles too, so --workers N keeps N cores busy.
    pool = HelpedPool(workers, initializer=warm_up)
    try:
        yield pool
    finally:
        pool.shutdown()


def local_workers(workers: int) -> int:
    """``workers``, or the CPUs this process may use where that is fewer (with a warning): more
    processes than CPUs only share them, and each costs memory and start-up."""
    if workers < 2:
        return workers
    from wsi_hcc.utils.pool import usable_cpus

    cpus = usable_cpus()
    if workers > cpus:
        log.warning("--workers %d is more than the %s this process may use; tiling with %d", workers,
                    counted(cpus, "CPU"), cpus)
    return min(workers, cpus)


def fit_stain_reference(config: TileConfig) -> dict | None:
    """Fit the configured stain normaliser to its reference image once for the whole batch."""
    if config.normalize == "none":
        return None
    from PIL import Image, UnidentifiedImageError

    from wsi_hcc.stain.normalizers import MacenkoNormalizer, ReinhardNormalizer

    path = Path(config.reference)
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise WsiHccError(f"{path}: stain reference image not found; check --reference") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise WsiHccError(f"{path}: cannot read the stain reference image ({exc}); use a PNG or JPEG") from None
    normalizer = MacenkoNormalizer() if config.normalize == "macenko" else ReinhardNormalizer()
    try:
        return normalizer.fit(rgb).to_dict()
    except WsiHccError as exc:
        raise WsiHccError(f"{path}: {exc}") from None


def _config_digest(config: TileConfig, stain: dict | None) -> str:
    """Identifies what a finished slide was made with; the stain reference's content counts too. The
    .h5 files do not: asking for them later writes them from the finished store (``_add_h5_files``)."""
    payload = json.dumps([config.model_dump(mode="json", exclude={"h5", "h5_layout"}), stain], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _states(out_dir: Path) -> StateFiles:
    return StateFiles(out_dir, ".state.json")


def _already_done(out_dir: Path, task: SlideTask, digest: str) -> bool:
    state = _states(out_dir).finished(task.stem, config_digest=digest, path=os.path.realpath(task.path),
                                      slide_mpp_override=task.mpp)
    return (state is not None and store_path_for(out_dir, task.stem).exists() and task.path.exists()
            and state.get("fingerprint") == slide_fingerprint(task.path))


def _store_of_another_slide(out_dir: Path, task: SlideTask) -> str | None:
    """The path of a different slide whose finished store already has this slide's name, if any."""
    state = _states(out_dir).read(task.stem)
    if state is None or state.get("status") != "done" or not store_path_for(out_dir, task.stem).exists():
        return None
    if state.get("path") == os.path.realpath(task.path) or state.get("fingerprint") == slide_fingerprint(task.path):
        return None  # this slide (changed since, or moved): tiling it again is right
    return state.get("path")


@dataclass(frozen=True)
class TilePlan:
    """What every slide of a tiling batch shares: decided once, then each slide is tiled by
    :func:`tile_task`, here or in another process (it pickles)."""

    out_dir: Path
    config: TileConfig
    digest: str
    stain: dict | None = None
    collisions: dict[str, list[Path]] = field(default_factory=dict)


def plan_tiles(inputs: list[str | Path], out_dir: str | Path, config: TileConfig, *, recursive: bool = False,
               slide_mpp: float | None = None) -> tuple[list[SlideTask], TilePlan]:
    """The slides ``inputs`` name and the plan they are tiled with (the stain reference fitted once)."""
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir)
    stain = fit_stain_reference(config)
    tasks = collect_slides(inputs, recursive=recursive, slide_mpp=slide_mpp)
    return tasks, TilePlan(out_dir, config, _config_digest(config, stain), stain, find_stem_collisions(tasks))


def tile_task(plan: TilePlan, task: SlideTask, *, overwrite: bool = False, executor: Executor | None = None,
              progress: Progress | None = None) -> SlideOutcome:
    """Tile one slide of ``plan``; a failure is an outcome with a one-line reason (and a state file)."""
    progress = progress or silent_progress()
    return run_items([task], lambda t: _tile_one(t, plan, overwrite, executor, progress), progress,
                     name=lambda t: t.stem, path=lambda t: t.path,
                     on_failure=lambda t, outcome: _record(plan.out_dir, outcome, plan.digest, None, t.mpp))[0]


def run_tile(inputs: list[str | Path], out_dir: str | Path, config: TileConfig, *, recursive: bool = False,
             slide_mpp: float | None = None, overwrite: bool = False, workers: int = 1,
             scheduler: str | None = None, progress: Progress | None = None) -> BatchReport:
    """Tile every slide named by ``inputs`` into ``out_dir``.

    Returns a report with one outcome per slide; failed slides carry a one-line reason. Raises only
    for problems that stop the whole batch (unwritable output folder, unreachable scheduler).
    """
    progress = progress or silent_progress()
    tasks, plan = plan_tiles(inputs, out_dir, config, recursive=recursive, slide_mpp=slide_mpp)
    workers = workers if scheduler else local_workers(workers)
    started = utc_now()
    with make_executor(workers, scheduler) as executor:
        outcomes = run_items(
            tasks, lambda task: _tile_one(task, plan, overwrite, executor, progress), progress,
            name=lambda task: task.stem, path=lambda task: task.path,
            on_failure=lambda task, outcome: _record(plan.out_dir, outcome, plan.digest, None, task.mpp))
    write_tile_manifest(plan, started, outcomes, workers=workers, scheduler=scheduler)
    return BatchReport(plan.out_dir, tuple(outcomes))


def write_tile_manifest(plan: TilePlan, started: str, outcomes: list[SlideOutcome], **fields) -> None:
    write_manifest(plan.out_dir / "run-manifest.json", "tile", started, outcomes,
                   config=plan.config.model_dump(mode="json"), config_digest=plan.digest, **fields)


def _tile_one(task: SlideTask, plan: TilePlan, overwrite: bool, executor: Executor | None,
              progress: Progress) -> SlideOutcome:
    try:
        with output_lock(store_path_for(plan.out_dir, task.stem)):
            return _tile_unlocked(task, plan.out_dir, plan.config, plan.digest, plan.collisions, overwrite, executor,
                                  progress, plan.stain)
    except LockHeld as held:  # two runs into one --out: the first keeps the slide; this run did not make it
        return SlideOutcome(task.stem, str(task.path), "failed", f"{task.path}: {held}")


def _tile_unlocked(task: SlideTask, out_dir: Path, config: TileConfig, digest: str,
                   collisions: dict[str, list[Path]], overwrite: bool, executor: Executor | None,
                   progress: Progress, stain: dict | None) -> SlideOutcome:
    base = {"stem": task.stem, "path": str(task.path)}
    if task.stem in collisions:
        # No state file either: it would be shared by the colliding slides too.
        others = ", ".join(str(p) for p in collisions[task.stem])
        return SlideOutcome(**base, status="failed",
                            reason=f"{task.path}: output name {task.stem!r} is shared by "
                                   f"{others}; rename one or tile them into separate --out folders")
    try:
        other = _store_of_another_slide(out_dir, task)
        if other is not None:
            store = store_path_for(out_dir, task.stem)
            return SlideOutcome(**base, status="failed",
                                reason=f"{task.path}: {store} already holds the tiles of another slide, {other}; "
                                       f"rename one, tile into another --out, or delete {store.name} to replace it")
        done = not overwrite and _already_done(out_dir, task, digest)
    except OSError:
        done = False  # unreadable slide: let tiling report it
    if done:
        warnings = _add_h5_files(out_dir, task.stem, config) if config.h5 else ()
        return SlideOutcome(**base, status="skipped", reason="already done", warnings=warnings)
    result = tile_slide(task.path, out_dir, config, stem=task.stem, mpp_override=task.mpp,
                        mpp_source=task.mpp_source, stain=stain, executor=executor,
                        on_start=progress.steps_planned, on_tiles=progress.steps_done)
    for warning in result.warnings:  # the outcome carries them to the front end, which shows them
        log.info("%s", warning)
    outcome = SlideOutcome(**base, status="done", n_tiles=result.n_tiles, seconds=result.seconds,
                           warnings=result.warnings)
    return _record(out_dir, outcome, digest, result.slide.fingerprint, task.mpp)


def _add_h5_files(out_dir: Path, stem: str, config: TileConfig) -> tuple[str, ...]:
    """Write a finished slide's coordinate file in ``config.h5_layout`` if it is missing; its warnings."""
    store = store_path_for(out_dir, stem)
    meta = read_store_meta(store)
    slide, spec = store_records(meta)
    if coords_file_path(config.h5_layout, out_dir, stem, spec).exists():
        return ()
    coords = np.asarray(open_store(store)["coords"][:])
    return write_coords_files(config.h5_layout, out_dir, stem, coords, spec, slide, meta.get("stain_reference"))[1]


def _record(out_dir: Path, outcome: SlideOutcome, digest: str, fingerprint: str | None,
            slide_mpp_override: float | None) -> SlideOutcome:
    """Write the slide's state file and return the outcome. The mpp given for the slide is part of
    what it was made with: a corrected mpp tiles it again."""
    _states(out_dir).write(outcome.stem, asdict(outcome) | {
        "path": os.path.realpath(outcome.path), "config_digest": digest, "fingerprint": fingerprint,
        "slide_mpp_override": slide_mpp_override,
        "store": os.path.abspath(store_path_for(out_dir, outcome.stem)) if outcome.status == "done" else None,
    })
    return outcome
