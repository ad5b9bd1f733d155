"""The per-tile table ``wsi-hcc classify`` writes beside each heatmap: ``OUT/<stem>.tiles.csv.gz``.

One row per tile: ``x``, ``y`` (level-0 top-left, as in the store), ``tile_size_level0``, then one
column per score: ``p_<class>`` for every class, and for MIL models ``attention`` and ``p_<grade>``
for every grade. ``wsi-hcc view`` draws its overlays from this table (and the store's grid), not
from the heatmap PNG.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.utils.atomic import atomic_write_bytes, csv_bytes

__all__ = ["TILE_TABLE_SUFFIX", "TileTable", "write_tile_table", "read_tile_table"]

TILE_TABLE_SUFFIX = ".tiles.csv.gz"
_POSITION_COLUMNS = ("x", "y", "tile_size_level0")


@dataclass(frozen=True)
class TileTable:
    """A slide's tiles (``coords`` ``(N, 2)`` level-0 top-left, ``tile_size_level0``) and ``scores``,
    each ``(N,)`` float64 by column name, in the file's column order."""

    coords: np.ndarray
    tile_size_level0: float
    scores: dict[str, np.ndarray]


def write_tile_table(path: Path, coords: np.ndarray, tile_size_level0: float, scores: dict[str, np.ndarray]) -> None:
    """Write the table atomically (gzip without a timestamp: the same scores give the same bytes)."""
    names = list(scores)
    columns = [np.asarray(scores[n], dtype=np.float64).reshape(-1) for n in names]
    size = round(float(tile_size_level0), 4)
    rows = [[int(x), int(y), size, *(f"{c[i]:.6g}" for c in columns)]
            for i, (x, y) in enumerate(np.asarray(coords).reshape(-1, 2).tolist())]
    atomic_write_bytes(path, gzip.compress(csv_bytes([*_POSITION_COLUMNS, *names], rows), mtime=0))


def read_tile_table(path: Path) -> TileTable:
    """Read a table written by ``write_tile_table``; a damaged or foreign file is one line naming it."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, compression="gzip")
    except (OSError, ValueError, EOFError) as exc:
        raise WsiHccError(f"{path}: not a readable tile table ({str(exc).splitlines()[0]}); run wsi-hcc classify "
                          "again for this slide") from None
    if list(frame.columns[:3]) != list(_POSITION_COLUMNS):
        raise WsiHccError(f"{path}: a tile table starts with the columns x, y, tile_size_level0, not "
                          f"{', '.join(map(str, frame.columns[:3]))}; run wsi-hcc classify again for this slide")
    sizes = frame["tile_size_level0"].to_numpy(np.float64)
    return TileTable(coords=frame[["x", "y"]].to_numpy(np.int64),
                     tile_size_level0=float(sizes[0]) if len(sizes) else 0.0,
                     scores={str(c): frame[c].to_numpy(np.float64) for c in frame.columns[3:]})
