"""Rich progress bars and the end-of-batch summary for the command line."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["RichBatchProgress"]


class RichBatchProgress:
    """A slides bar and a tiles bar for the slide being processed."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True, soft_wrap=True)
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
                              disable=not self.console.is_terminal)
        self._slides = None
        self._tiles = None
        self._label = "slides"

    def __enter__(self):
        self._bars.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bars.__exit__(*exc)

    def stage(self, name: str) -> RichBatchProgress:
        """Start a new slides bar named ``name`` (one per stage of a multi-stage command); returns self."""
        for task in (self._slides, self._tiles):
            if task is not None:
                self._bars.remove_task(task)
        self._slides = self._tiles = None
        self._label = name
        return self

    def slide_started(self, task, position, total):
        if self._slides is None:
            self._slides = self._bars.add_task(self._label, total=total)
        if self._tiles is not None:
            self._bars.remove_task(self._tiles)
        self._tiles = self._bars.add_task(f"  {task.stem}", total=None)

    def tiles_planned(self, n_tiles):
        self._bars.update(self._tiles, total=n_tiles, completed=0)

    def tiles_written(self, n_tiles):
        self._bars.advance(self._tiles, n_tiles)

    def slide_finished(self, outcome):
        self._bars.advance(self._slides, 1)
        for warning in outcome.warnings:
            self.console.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)

    def print_summary(self, report) -> None:
        done, skipped, failed = (report.count(s) for s in ("done", "skipped", "failed"))
        tiles = sum(o.n_tiles for o in report.outcomes)
        self.console.print(f"{len(report.outcomes)} slides: {done} done ({tiles} tiles), {skipped} skipped, "
                           f"{failed} failed -> {report.out_dir}", highlight=False)
        if not report.outcomes:
            self.console.print("no slides found in the given paths", highlight=False)
        for outcome in report.failed:
            self.console.print(f"[red]FAILED[/] {outcome.reason}", markup=True, highlight=False)
