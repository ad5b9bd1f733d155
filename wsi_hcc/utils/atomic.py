"""Outputs appear at their final name only when complete: write to a temporary name, then rename."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_csv", "csv_bytes", "publish_dir", "partial_path",
           "fresh_partial_dir"]


def partial_path(final: Path) -> Path:
    """The hidden temporary name a ``final`` output is written under."""
    return final.with_name(f".{final.name}.partial")


def fresh_partial_dir(final: Path) -> Path:
    """An empty temporary folder for ``final`` (left-overs of a killed run removed); publish it
    with ``publish_dir`` when complete."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = partial_path(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]], *,
              lineterminator: str = "\n", ignore_extra: bool = False) -> bytes:
    """A CSV table: ``header``, then ``rows`` given as sequences, or as mappings keyed by the header
    (a missing key is an empty cell; another key is an error unless ``ignore_extra``)."""
    buffer = io.StringIO()
    rows = list(rows)
    if rows and isinstance(rows[0], Mapping):
        writer = csv.DictWriter(buffer, fieldnames=list(header), lineterminator=lineterminator, restval="",
                                extrasaction="ignore" if ignore_extra else "raise")
        writer.writeheader()
    else:
        writer = csv.writer(buffer, lineterminator=lineterminator)
        writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def atomic_write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]],
                     **options: Any) -> None:
    """``csv_bytes(header, rows, **options)`` written atomically to ``path``."""
    atomic_write_bytes(path, csv_bytes(header, rows, **options))


def publish_dir(tmp: Path, final: Path) -> None:
    """Move a completed directory to ``final``, replacing any older one there."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)
