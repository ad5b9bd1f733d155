"""One progress protocol for every long job. The library never prints: it reports here, and a
front end (the CLI's rich bars, a notebook, a log) shows it.

Work comes as **items** (the slides or stores of a batch, the epochs of a training run, the cases
of a cohort) made of **steps** (tiles, batches). A command of several stages (classify: tile,
features, classify) names each stage before its items. Lines worth keeping in a log (a fold's
result, an epoch's metrics) are messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Progress", "silent_progress"]


class Progress(Protocol):
    def stage(self, name: str) -> None:
        """A new stage begins; the items that follow belong to it."""

    def item_started(self, name: str, position: int, total: int) -> None:
        """Item ``position`` (0-based) of ``total`` begins."""

    def steps_planned(self, total: int | None, done: int = 0, name: str = "") -> None:
        """The current item (or its part ``name``, e.g. "validation") has ``total`` steps, ``done`` already."""

    def steps_done(self, n: int = 1, status: str = "") -> None:
        """``n`` more steps finished; ``status`` is a short running figure ("loss 0.412")."""

    def item_finished(self, warnings: Sequence[str] = ()) -> None:
        """The current item ended; ``warnings`` are one-line notes for the user."""

    def message(self, text: str) -> None:
        """A line worth keeping in the log."""


class _Silent:
    """Progress that goes nowhere, for library callers that pass none."""

    def stage(self, name): pass

    def item_started(self, name, position, total): pass

    def steps_planned(self, total, done=0, name=""): pass

    def steps_done(self, n=1, status=""): pass

    def item_finished(self, warnings=()): pass

    def message(self, text): pass


def silent_progress() -> Progress:
    return _Silent()
