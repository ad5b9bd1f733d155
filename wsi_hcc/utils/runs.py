"""The bookkeeping every run shares, so each command keeps the same promises to a lab: a manifest
with its provenance, per-item state files that let a rerun skip finished work, and outcomes whose
failures are listed at the end.

A *batch* runs one item (a slide, a store, a fold) after another: :func:`run_items` gives each a
progress item, turns an exception into a failed outcome with a one-line reason (the batch goes on)
and lets ``KeyboardInterrupt`` through. :class:`StateFiles` record how each item ended and what it
was made with (a digest), so :meth:`StateFiles.finished` can skip it next time. :func:`write_manifest`
writes the run's manifest atomically.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wsi_hcc.errors import OutputError, WsiHccError
from wsi_hcc.utils.atomic import atomic_write_json
from wsi_hcc.utils.progress import Progress
from wsi_hcc.utils.versions import stack_versions, utc_now

__all__ = ["SlideOutcome", "BatchReport", "StateFiles", "run_items", "one_line_reason", "prepare_out_dir",
           "write_problem", "provenance", "write_manifest"]

log = logging.getLogger(__name__)
Item = TypeVar("Item")
STATUSES = ("done", "skipped", "failed")


@dataclass(frozen=True)
class SlideOutcome:
    """How one slide (or store) of a batch ended: ``done``, ``skipped`` or ``failed`` (with a one-line reason)."""

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


def one_line_reason(path: str | Path, exc: BaseException) -> str:
    """The first line of ``exc``, naming ``path`` (and the exception's type if it is not ours)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if not isinstance(exc, WsiHccError):
        text = f"{type(exc).__name__}: {text}"
    return text if str(path) in text else f"{path}: {text}"


def run_items(items: Sequence[Item], run_one: Callable[[Item], SlideOutcome], progress: Progress, *,
              name: Callable[[Item], str], path: Callable[[Item], str | Path],
              on_failure: Callable[[Item, SlideOutcome], None] | None = None) -> list[SlideOutcome]:
    """``run_one`` on every item in order, each a progress item. An exception fails that item only:
    its outcome carries a one-line reason, and ``on_failure`` (if given) hears it."""
    outcomes = []
    for position, item in enumerate(items):
        progress.item_started(name(item), position, len(items))
        started = time.perf_counter()
        try:
            outcome = run_one(item)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one bad item never stops the batch
            log.debug("%s failed", path(item), exc_info=True)
            outcome = SlideOutcome(name(item), str(path(item)), "failed", one_line_reason(path(item), exc),
                                   seconds={"total": time.perf_counter() - started})
            if on_failure is not None:
                on_failure(item, outcome)
        outcomes.append(outcome)
        progress.item_finished(outcome.warnings)
    return outcomes


def write_problem(folder: Path) -> str | None:
    """Why no file can be created in ``folder``, or None: a probe file is made and removed (named so
    that processes on several hosts of a shared file system never share one)."""
    probe = Path(folder) / f".write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it is writable, or fail with one line."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or str(exc)
    else:
        reason = write_problem(out_dir)
    if reason:
        raise OutputError(f"{out_dir}: cannot write the output folder ({reason}); choose another --out")


class StateFiles:
    """One JSON state file per item, ``<out_dir>/<stem><suffix>``, written atomically when the
    item ends. It records what the item was made with, so a rerun skips it only when that matches."""

    def __init__(self, out_dir: Path, suffix: str):
        self.out_dir, self.suffix = Path(out_dir), suffix

    def path(self, stem: str) -> Path:
        return self.out_dir / f"{stem}{self.suffix}"

    def read(self, stem: str) -> dict[str, Any] | None:
        try:
            state = json.loads(self.path(stem).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            return None  # no state, or a damaged one: the item is done again
        return state if isinstance(state, dict) else None

    def finished(self, stem: str, **expected: Any) -> dict[str, Any] | None:
        """The item's state if it ended ``done`` with every ``expected`` value, else None."""
        state = self.read(stem)
        if state is None or state.get("status") != "done":
            return None
        return state if all(state.get(key) == value for key, value in expected.items()) else None

    def write(self, stem: str, state: Mapping[str, Any]) -> None:
        atomic_write_json(self.path(stem), {**state, "finished": utc_now()})


def provenance(**fields: Any) -> dict[str, Any]:
    """What every output records of the run that made it: the time, the stack's versions, ``fields``."""
    return {"created": utc_now(), "versions": stack_versions(), **fields}


def write_manifest(path: Path, command: str, started: str, outcomes: Iterable[SlideOutcome] | None = None,
                   **fields: Any) -> None:
    """The run's manifest: command, start and end, versions, ``fields`` and, for a batch, the
    count of each status and every item's status and reason."""
    manifest = {"command": command, "started": started, "finished": utc_now(), "versions": stack_versions(),
                **fields}
    if outcomes is not None:
        outcomes = list(outcomes)
        manifest["summary"] = {s: sum(o.status == s for o in outcomes) for s in STATUSES}
        manifest["slides"] = [{"stem": o.stem, "path": o.path, "status": o.status, "reason": o.reason}
                              for o in outcomes]
    atomic_write_json(path, manifest)
