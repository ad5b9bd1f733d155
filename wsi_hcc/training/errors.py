"""The training package's one-line error."""

from __future__ import annotations

from wsi_hcc.errors import WsiHccError

__all__ = ["TrainError", "worker_error_line"]


class TrainError(WsiHccError):
    """Training data, model or output folder cannot be used as configured."""


def worker_error_line(exc: BaseException) -> str:
    """The original one-line message of an error a DataLoader worker re-raised.

    torch re-raises a worker's exception with its traceback in the message
    ("Caught X in DataLoader worker process 0. Original Traceback ...: message"); the message is the
    last line.
    """
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    if "DataLoader worker" not in lines[0]:
        return lines[0]
    head, sep, rest = lines[-1].partition(": ")
    return rest if sep and " " not in head else lines[-1]
