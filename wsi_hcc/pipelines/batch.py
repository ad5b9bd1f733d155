"""What every batch command shares: per-slide outcomes, the run report, progress, the output folder.

Semantics a lab relies on: a failed slide never stops the batch and is reported in one line at the
end; finished slides are skipped on a rerun (``overwrite`` redoes them); every slide gets a state
file; the run gets a manifest.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from wsi_hcc.errors import OutputError, WsiHccError
from wsi_hcc.tiling.inputs import SlideTask

__all__ = ["SlideOutcome", "BatchReport", "prepare_out_dir", "one_line_reason"]


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


def one_line_reason(task: SlideTask, exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if not isinstance(exc, WsiHccError):
        text = f"{type(exc).__name__}: {text}"
    return text if str(task.path) in text else f"{task.path}: {text}"
