"""Batch runs: the only module that chains stages and owns per-slide state and run manifests.

Semantics a lab relies on: a failed slide never stops the batch; finished slides are skipped on a
rerun (``overwrite`` redoes them); every slide gets a state file; the run gets a manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from .atomic import atomic_write_json
from .config import TileConfig
from .errors import OutputError, WsiHccError
from .inputs import SlideTask, collect_slides, find_stem_collisions
from .slideinfo import slide_fingerprint
from .tiling import store_path_for, tile_slide
from .versions import stack_versions, utc_now

__all__ = ["SlideOutcome", "BatchReport", "BatchProgress", "run_tile", "make_executor", "prepare_out_dir",
           "fit_stain_reference", "one_line_reason", "silent_progress"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlideOutcome:
    """How one slide of a batch ended: ``done``, ``skipped`` or ``failed`` (with a one-line reason)."""

    stem: str
    path: str
    status: str
    reason: str = ""
    n_tiles: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchReport:
    out_dir: Path
    outcomes: tuple[SlideOutcome, ...]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> tuple[SlideOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status == "failed")


class BatchProgress(Protocol):
    """What a front end hears during a batch. The library never prints."""

    def slide_started(self, task: SlideTask, position: int, total: int) -> None: ...

    def tiles_planned(self, n_tiles: int) -> None: ...

    def tiles_written(self, n_tiles: int) -> None: ...

    def slide_finished(self, outcome: SlideOutcome) -> None: ...


class _Silent:
    """Progress that goes nowhere, for library callers that pass none."""

    def slide_started(self, task, position, total): pass

    def tiles_planned(self, n_tiles): pass

    def tiles_written(self, n_tiles): pass

    def slide_finished(self, outcome): pass


def silent_progress() -> BatchProgress:
    return _Silent()


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it is writable, or fail with one line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"{out_dir}: cannot write the output folder ({reason}); choose another --out") from None


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

        from .extract import warm_up

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

    from .stain import MacenkoNormalizer, ReinhardNormalizer

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


def one_line_reason(task: SlideTask, exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if not isinstance(exc, WsiHccError):
        text = f"{type(exc).__name__}: {text}"
    return text if str(task.path) in text else f"{task.path}: {text}"


def run_tile(inputs: list[str | Path], out_dir: str | Path, config: TileConfig, *, recursive: bool = False,
             slide_mpp: float | None = None, overwrite: bool = False, workers: int = 1,
             scheduler: str | None = None, progress: BatchProgress | None = None) -> BatchReport:
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
            progress.slide_started(task, position, len(tasks))
            outcome = _tile_one(task, out_dir, config, digest, collisions, overwrite, executor, progress, stain)
            outcomes.append(outcome)
            progress.slide_finished(outcome)
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
              progress: BatchProgress, stain: dict | None) -> SlideOutcome:
    base = {"stem": task.stem, "path": str(task.path)}
    if task.stem in collisions:
        # No state file either: it would be shared by the colliding slides too.
        others = ", ".join(str(p) for p in collisions[task.stem])
        return SlideOutcome(**base, status="failed", reason=f"{task.path}: output name {task.stem!r} is shared by "
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
                            on_start=progress.tiles_planned, on_tiles=progress.tiles_written)
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
