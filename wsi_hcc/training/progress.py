"""Progress of a training run: a protocol, a silent default, and rich bars for a terminal.

Bars are drawn only on a terminal; the one-line summary per epoch is printed everywhere (logs of
batch jobs keep it).
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["TrainProgress", "silent_train_progress", "RichTrainProgress"]


class TrainProgress(Protocol):
    def message(self, text: str) -> None: ...

    def epoch_started(self, epoch: int, epochs: int, n_batches: int, done_batches: int) -> None: ...

    def batch_done(self, loss: float) -> None: ...

    def evaluating(self, split: str, n_tiles: int) -> None: ...

    def tiles_evaluated(self, n: int) -> None: ...

    def epoch_finished(self, record: dict[str, Any], best: bool) -> None: ...


class _Silent:
    def message(self, text): pass

    def epoch_started(self, epoch, epochs, n_batches, done_batches): pass

    def batch_done(self, loss): pass

    def evaluating(self, split, n_tiles): pass

    def tiles_evaluated(self, n): pass

    def epoch_finished(self, record, best): pass


def silent_train_progress() -> TrainProgress:
    return _Silent()


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


class RichTrainProgress:
    """A bar for the batches of the current epoch (and one for evaluation), plus a line per epoch."""

    def __init__(self, console=None):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True, soft_wrap=True)
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                              console=self.console, transient=True, disable=not self.console.is_terminal)
        self._task = None
        self._loss_sum, self._seen = 0.0, 0

    def __enter__(self):
        self._bars.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bars.__exit__(*exc)

    def _replace(self, description: str, total: int, completed: int = 0) -> None:
        if self._task is not None:
            self._bars.remove_task(self._task)
        self._task = self._bars.add_task(description, total=total, completed=completed, loss="")

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def epoch_started(self, epoch, epochs, n_batches, done_batches):
        self._loss_sum, self._seen = 0.0, 0
        self._replace(f"epoch {epoch + 1}/{epochs}", n_batches, done_batches)

    def batch_done(self, loss):
        self._loss_sum += loss
        self._seen += 1
        self._bars.update(self._task, advance=1, loss=f"loss {self._loss_sum / self._seen:.4f}")

    def evaluating(self, split, n_tiles):
        self._replace(f"  {split}", n_tiles)

    def tiles_evaluated(self, n):
        self._bars.advance(self._task, n)

    def epoch_finished(self, record, best):
        self.console.print(
            f"epoch {record['epoch'] + 1}: train loss {_fmt(record['train_loss'])}, "
            f"val loss {_fmt(record['val_loss'])}, "
            f"val acc {_fmt(record['val_accuracy'])}, val bal. acc {_fmt(record['val_balanced_accuracy'])}, "
            f"val AUC {_fmt(record['val_auc'])}, lr {record['lr']:.3g}" + ("  (best)" if best else ""),
            highlight=False, markup=False)
