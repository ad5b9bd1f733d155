"""Rich progress bars (an items bar and a steps bar) and the end-of-batch summary for the command line.

Bars are drawn only on a terminal; messages and warnings are printed everywhere (logs of batch jobs
keep them).
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["RichProgress"]


class RichProgress:
    """The :class:`wsi_hcc.utils.progress.Progress` protocol as rich bars: one for the items of the
    current stage (slides, epochs), one for the steps of the current item (tiles, batches)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True, soft_wrap=True)
        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                              console=self.console, transient=True, disable=not self.console.is_terminal)
        self._items = None
        self._steps = None
        self._label = "slides"

    def __enter__(self):
        self._bars.__enter__()
        return self

    def __exit__(self, *exc):
        return self._bars.__exit__(*exc)

    def _drop(self, task) -> None:
        if task is not None:
            self._bars.remove_task(task)

    def stage(self, name):
        self._drop(self._items)
        self._drop(self._steps)
        self._items = self._steps = None
        self._label = name

    def item_started(self, name, position, total):
        if self._items is None:
            self._items = self._bars.add_task(self._label, total=total, completed=position, status="")
        self._drop(self._steps)
        self._steps = self._bars.add_task(f"  {name}", total=None, status="")

    def steps_planned(self, total, done=0, name=""):
        if self._steps is None or name:
            self._drop(self._steps)
            self._steps = self._bars.add_task(f"  {name}", total=None, status="")
        self._bars.update(self._steps, total=total, completed=done)

    def steps_done(self, n=1, status=""):
        if self._steps is not None:
            self._bars.update(self._steps, advance=n, status=status)

    def item_finished(self, warnings=()):
        if self._items is not None:
            self._bars.advance(self._items, 1)
        for warning in warnings:
            self.console.print(f"[yellow]warning:[/] {warning}", markup=True, highlight=False)

    def message(self, text):
        self.console.print(text, highlight=False, markup=False)

    def print_summary(self, report, noun: str = "slide") -> None:
        """One line for a batch: ``noun`` is what its items are (slides for tile, stores for features)."""
        from wsi_hcc.utils.words import counted

        done, skipped, failed = (report.count(s) for s in ("done", "skipped", "failed"))
        tiles = sum(o.n_tiles for o in report.outcomes)
        self.console.print(f"{counted(len(report.outcomes), noun)}: {done} done ({counted(tiles, 'tile')}), "
                           f"{skipped} skipped, {failed} failed -> {report.out_dir}", highlight=False)
        if not report.outcomes:
            self.console.print(f"no {noun}s found in the given paths", highlight=False)
        for outcome in report.failed:
            self.console.print(f"[red]FAILED[/] {outcome.reason}", markup=True, highlight=False)
