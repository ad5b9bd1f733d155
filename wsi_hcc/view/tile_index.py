"""Which model tile covers a level-0 point: per pixel of an overlay tile, or under the cursor.

A store's tiles lie on a lattice (``TileSpec.tile_boxes``: each column of tiles shares its x edges,
each row its y edges, neighbours share an edge), so a point's tile is two binary searches and one
look-up in a ``(rows, cols)`` table: a 256 px overlay tile costs the same whether it covers ten
tiles or a hundred thousand. Overlapping grids fall back to painting box by box. A pixel belongs
to a tile when the tile covers the pixel's centre (as in ``wsi_hcc.viz.heatmap.value_grid``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["TileIndex"]


class TileIndex:
    """Tile look-up over ``(N, 4)`` level-0 boxes ``(x0, y0, x1, y1)``."""

    def __init__(self, boxes: np.ndarray):
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self._lattice = _lattice(self.boxes)

    def __len__(self) -> int:
        return len(self.boxes)

    def index_image(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """``(len(ys), len(xs))`` int64 tile index (``-1``: no tile) at the level-0 points of the
        outer grid of ``xs`` (columns) and ``ys`` (rows)."""
        xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
        if self._lattice is not None:
            (x_starts, x_ends), (y_starts, y_ends), table = self._lattice
            cols, col_ok = _interval_of(xs, x_starts, x_ends)
            rows, row_ok = _interval_of(ys, y_starts, y_ends)
            found = table[rows[:, None], cols[None, :]]
            return np.where(row_ok[:, None] & col_ok[None, :], found, -1)
        return self._painted(xs, ys)

    def at(self, x: float, y: float) -> int:
        """The tile covering level-0 point ``(x, y)``, or ``-1``."""
        return int(self.index_image(np.array([x]), np.array([y]))[0, 0])

    def _painted(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Box by box, later tiles over earlier ones (grids with overlap); ``xs``/``ys`` ascending."""
        out = np.full((len(ys), len(xs)), -1, dtype=np.int64)
        if not len(xs) or not len(ys):
            return out
        b = self.boxes
        near = np.flatnonzero((b[:, 2] > xs[0]) & (b[:, 0] <= xs[-1]) & (b[:, 3] > ys[0]) & (b[:, 1] <= ys[-1]))
        for i in near.tolist():
            c0, c1 = np.searchsorted(xs, b[i, 0], "left"), np.searchsorted(xs, b[i, 2], "left")
            r0, r1 = np.searchsorted(ys, b[i, 1], "left"), np.searchsorted(ys, b[i, 3], "left")
            out[r0:r1, c0:c1] = i
        return out


def _interval_of(points: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the ``[start, end)`` interval holding each point (sorted, disjoint intervals) and
    whether one does."""
    k = np.searchsorted(starts, points, "right") - 1
    safe = np.clip(k, 0, max(len(starts) - 1, 0))
    return safe, (k >= 0) & (points < ends[safe]) if len(starts) else np.zeros(len(points), bool)


def _axis(starts: np.ndarray, ends: np.ndarray):
    """The axis' distinct ``[start, end)`` intervals and each box's interval, or None when boxes
    with one start end differently or intervals overlap."""
    unique, inverse = np.unique(starts, return_inverse=True)
    interval_ends = np.empty(len(unique))
    interval_ends[inverse] = ends
    if not np.array_equal(interval_ends[inverse], ends) or np.any(interval_ends[:-1] > unique[1:]):
        return None
    return (unique, interval_ends), inverse


def _lattice(boxes: np.ndarray):
    if not len(boxes):
        return (np.zeros(0), np.zeros(0)), (np.zeros(0), np.zeros(0)), np.full((1, 1), -1, dtype=np.int64)
    x_axis, y_axis = _axis(boxes[:, 0], boxes[:, 2]), _axis(boxes[:, 1], boxes[:, 3])
    if x_axis is None or y_axis is None:
        return None
    (x_intervals, cols), (y_intervals, rows) = x_axis, y_axis
    table = np.full((len(y_intervals[0]), len(x_intervals[0])), -1, dtype=np.int64)
    table[rows, cols] = np.arange(len(boxes))
    if np.count_nonzero(table >= 0) != len(boxes):  # two tiles in one cell: not a lattice
        return None
    return x_intervals, y_intervals, table
