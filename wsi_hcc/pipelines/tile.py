"""``wsi-hcc tile`` as a batch: slides in, one patch store per slide out, locally or on dask.distributed."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.pipelines.batch import (
    BatchReport,
    SlideOutcome,
    one_line_reason,
    prepare_out_dir,
)
from wsi_hcc.slide.info import slide_fingerprint
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.inputs import SlideTask, collect_slides, find_stem_collisions
from wsi_hcc.tiling.slide_tiler import store_path_for, tile_slide
from wsi_hcc.utils.atomic import atomic_write_json
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.versions import stack_versions, utc_now

__all__ = ["run_tile", "make_executor", "fit_stain_reference"]

log = logging.getLogger(__name__)


@contextmanager
def make_executor(workers: int = 1, scheduler: str | None = None) -> Iterator[Executor | None]:
    """A process pool for ``workers`` > 1, a dask.distributed client for ``scheduler``, else None."""
    if scheduler:
        from distributed import Client

        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise WsiHccError(f"cannot reach the dask scheduler at {scheduler} ({exc}); check the address") from None
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
    elif workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from wsi_hcc.tiling.extract import warm_up

        # spawn, not fork: openslide and tifffile handles must not be shared with children.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for _ in range(workers):  # start every worker now, while the first slide is planned
                pool.submit(warm_up)
            yield pool
    else:
        yield None


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
    """Identifies what a finished slide was made with; the stain reference's content counts too."""
    payload = json.dumps([config.model_dump(mode="json"), stain], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _state_path(out_dir: Path, stem: str) -> Path:
    return out_dir / f"{stem}.state.json"


def _already_done(out_dir: Path, task: SlideTask, digest: str) -> bool:
    state_file = _state_path(out_dir, task.stem)
    if not state_file.exists() or not store_path_for(out_dir, task.stem).exists():
        return False
    try:
        state = json.loads(state_file.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (state.get("status") == "done" and state.get("config_digest") == digest
            and state.get("path") == str(task.path.resolve()) and task.path.exists()
            and state.get("fingerprint") == slide_fingerprint(task.path))


def run_tile(inputs: list[str | Path], out_dir: str | Path, config: TileConfig, *, recursive: bool = False,
             slide_mpp: float | None = None, overwrite: bool = False, workers: int = 1,
             scheduler: str | None = None, progress: Progress | None = None) -> BatchReport:
    """Tile every slide named by ``inputs`` into ``out_dir``.

    Returns a report with one outcome per slide; failed slides carry a one-line reason. Raises only
    for problems that stop the whole batch (unwritable output folder, unreachable scheduler).
    """
    out_dir = Path(out_dir)
    progress = progress or silent_progress()
    prepare_out_dir(out_dir)
    stain = fit_stain_reference(config)
    tasks = collect_slides(inputs, recursive=recursive, slide_mpp=slide_mpp)
    collisions = find_stem_collisions(tasks)
    digest = _config_digest(config, stain)
    started = utc_now()
    outcomes: list[SlideOutcome] = []
    with make_executor(workers, scheduler) as executor:
        for position, task in enumerate(tasks):
            progress.item_started(task.stem, position, len(tasks))
            outcome = _tile_one(task, out_dir, config, digest, collisions, overwrite, executor, progress, stain)
            outcomes.append(outcome)
            progress.item_finished(outcome.warnings)
    report = BatchReport(out_dir, tuple(outcomes))
    atomic_write_json(out_dir / "run-manifest.json", {
        "command": "tile", "started": started,
        "finished": utc_now(),
        "config": config.model_dump(mode="json"), "config_digest": digest, "versions": stack_versions(),
        "workers": workers, "scheduler": scheduler,
        "summary": {s: report.count(s) for s in ("done", "skipped", "failed")},
        "slides": [{"stem": o.stem, "path": o.path, "status": o.status, "reason": o.reason} for o in outcomes],
    })
    return report


def _tile_one(task: SlideTask, out_dir: Path, config: TileConfig, digest: str,
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
        if not overwrite and _already_done(out_dir, task, digest):
            return SlideOutcome(**base, status="skipped", reason="already done")
    except OSError:
        pass  # unreadable slide: let tiling report it
    started = time.perf_counter()
    try:
        result = tile_slide(task.path, out_dir, config, stem=task.stem, mpp_override=task.mpp,
                            mpp_source=task.mpp_source, stain=stain, executor=executor,
                            on_start=progress.steps_planned, on_tiles=progress.steps_done)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad slide never stops the batch
        log.debug("%s failed", task.path, exc_info=True)
        return _record(out_dir, SlideOutcome(**base, status="failed", reason=one_line_reason(task, exc),
                                             seconds={"total": time.perf_counter() - started}), digest, None)
    for warning in result.warnings:  # the outcome carries them to the front end, which shows them
        log.info("%s", warning)
    outcome = SlideOutcome(**base, status="done", n_tiles=result.n_tiles, seconds=result.seconds,
                           warnings=result.warnings)
    return _record(out_dir, outcome, digest, result.slide.fingerprint)


def _record(out_dir: Path, outcome: SlideOutcome, digest: str, fingerprint: str | None) -> SlideOutcome:
    """Write the slide's state file and return the outcome."""
    state = asdict(outcome) | {
        "path": str(Path(outcome.path).resolve()), "config_digest": digest, "fingerprint": fingerprint,
        "store": str(store_path_for(out_dir, outcome.stem)) if outcome.status == "done" else None,
        "finished": utc_now(),
    }
    atomic_write_json(_state_path(out_dir, outcome.stem), state)
    return outcome
