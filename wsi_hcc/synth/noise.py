"""Lattice noise: hashing, value-noise interpolation, Gaussian blur and signed distance."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# A lattice has a node every `cell` level-0 pixels (an integer) and node (i, j) sits at level-0
# (x, y) = (j, i) * cell; pixel (x, y) has its centre at (x, y). Interpolating a whole region and
# interpolating single points give the same field, which keeps nuclei (drawn from points) and
# stroma (drawn per region) in agreement.


def _lowbias32(x: np.ndarray) -> np.ndarray:
    """Integer hash with good avalanche on uint32 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def _hash01(key: np.uint32, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) value per lattice node; float32, shape ``broadcast(rows, cols)``.

    ``rows`` and ``cols`` are int64 node indices (may be negative), broadcastable together.
    """
    r = _lowbias32((rows & 0xFFFFFFFF).astype(np.uint32) ^ key)
    c = (cols & 0xFFFFFFFF).astype(np.uint32) * np.uint32(0x9E3779B1)
    h = _lowbias32(r + c)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)


def _smooth01(t: np.ndarray) -> np.ndarray:
    """Smoothstep 3t^2 - 2t^3 of values already in [0, 1]."""
    return t * t * (3 - 2 * t)


def _cell_weights(cell: int, smooth: bool) -> np.ndarray:
    """Interpolation weight of the next node at offsets 0 .. cell-1; float32 (cell,)."""
    t = np.arange(cell, dtype=np.float64) / cell
    return (_smooth01(t) if smooth else t).astype(np.float32)


def _interpolate_region(
    nodes: Callable[[np.ndarray, np.ndarray], np.ndarray],
    cell: int,
    smooth: bool,
    x0: int,
    y0: int,
    w: int,
    h: int,
) -> np.ndarray:
    """Interpolate a lattice on the level-0 region at ``(x0, y0)`` of size ``(w, h)``.

    Parameters
    ----------
    nodes : callable
        ``nodes(rows (ny, 1), cols (1, nx))`` -> float32 ``(ny, nx)`` node values (int64 indices).
    cell : int
        Node spacing in level-0 pixels.
    smooth : bool
        Smoothstep weights (value noise) instead of linear ones (bilinear).
    x0, y0, w, h : int
        The region, level-0 pixels.

    Returns
    -------
    np.ndarray
        float32 ``(h, w)``; may be a non-contiguous view.
    """
    j0, i0 = x0 // cell, y0 // cell
    nx = (x0 + w - 1) // cell - j0 + 2
    ny = (y0 + h - 1) // cell - i0 + 2
    values = nodes(np.arange(i0, i0 + ny)[:, None], np.arange(j0, j0 + nx)[None, :])
    weights = _cell_weights(cell, smooth)
    pos = y0 - i0 * cell + np.arange(h)
    r = pos // cell
    rows = values[r]
    rows += (values[r + 1] - rows) * weights[pos % cell][:, None]  # (h, nx)
    off = x0 - j0 * cell
    if cell < 12:
        # Small cells: gather per column (a short trailing axis would make numpy slow).
        cols = off + np.arange(w)
        c = cols // cell
        left = rows[:, c]
        out = rows[:, c + 1] - left
        out *= weights[cols % cell]
        out += left
        return out
    left = rows[:, :-1, None]
    out = (rows[:, 1:, None] - left) * weights
    out += left  # (h, nx - 1, cell)
    return out.reshape(h, (nx - 1) * cell)[:, off:off + w]


def _interpolate_points(
    nodes: Callable[[np.ndarray, np.ndarray], np.ndarray],
    cell: int,
    smooth: bool,
    xs: np.ndarray,
    ys: np.ndarray,
) -> np.ndarray:
    """`_interpolate_region` at level-0 points ``(xs[k], ys[k])``; float64 (n,)."""
    fy, fx = ys / cell, xs / cell
    iy, ix = np.floor(fy).astype(np.int64), np.floor(fx).astype(np.int64)
    wy, wx = fy - iy, fx - ix
    if smooth:
        wy, wx = _smooth01(wy), _smooth01(wx)
    left = nodes(iy, ix) * (1 - wy) + nodes(iy + 1, ix) * wy
    right = nodes(iy, ix + 1) * (1 - wy) + nodes(iy + 1, ix + 1) * wy
    return left + (right - left) * wx


def _gaussian_blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a small 2-D float64 array (weights renormalised at edges)."""
    out = a
    for axis in (0, 1):
        i = np.arange(a.shape[axis])
        k = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
        k /= k.sum(axis=1, keepdims=True)
        out = k @ out if axis == 0 else out @ k.T
    return out


def _signed_distance(field: np.ndarray, cell_px: int) -> np.ndarray:
    """Approximate signed distance in level-0 px to the zero level set of a coarse field."""
    gy, gx = np.gradient(field)
    grad = np.hypot(gx, gy)
    grad = np.maximum(grad, 0.1 * float(np.median(grad)) + 1e-12)
    return field / grad * cell_px


def _px(um: float, px_per_um: float) -> int:
    """A noise lattice spacing in whole pixels, at least 2."""
    return max(2, round(um * px_per_um))
