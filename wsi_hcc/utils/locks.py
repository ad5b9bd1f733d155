"""One run at a time per output: a lock file created atomically next to it.

``O_CREAT | O_EXCL`` is atomic on local disks and on NFS (v3 and later), unlike ``flock``, which
many NFS setups ignore. The lock names its holder (host, pid, start); a lock left by a process that
no longer runs on this host is taken over, one from another host is left to its owner (or to a
person, whom the message tells how).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wsi_hcc.utils.versions import utc_now

__all__ = ["LockHeld", "output_lock"]


class LockHeld(Exception):
    """Another live run holds the lock; ``str()`` says who and what to do."""


def _holder(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def _alive_here(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: we cannot tell, so it is alive
    try:
        os.kill(int(holder.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _just_made(lock: Path) -> bool:
    """An empty lock is one being written right now, unless it is old (its writer died)."""
    import time

    try:
        return time.time() - lock.stat().st_mtime < 60
    except FileNotFoundError:
        return False


@contextmanager
def output_lock(target: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` while the block runs; :class:`LockHeld` if a live run has it."""
    target = Path(target)
    lock = target.with_name(f".{target.name}.lock")
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": utc_now()}).encode()
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if _alive_here(holder) if holder else _just_made(lock):
                raise LockHeld(f"{target.name} is being written by another run (pid {holder.get('pid')} on "
                               f"{holder.get('host')} since {holder.get('since')}); run again when it has "
                               f"finished, or delete {lock} if that run is dead") from None
            lock.unlink(missing_ok=True)  # left by a run that died: take it over
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(record)
        break
    else:
        raise LockHeld(f"{target.name}: could not take {lock} (another run keeps taking it); run again")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
