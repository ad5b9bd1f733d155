"""Compiled loops for :mod:`wsi_hcc.stain.cielab`; import that module, not this one.

Each loop is written so that LLVM vectorises it: planes of float32 ``(3, N)``, the constants of
a matrix copied into scalars, selects instead of branches, and table look-ups (which do not
vectorise) kept in loops of their own. Interleaved ``(N, 3)`` arrays ran two to three times
slower. The machine code is cached beside this file (or in the user's cache folder when the install
is read-only), so only the first process compiles.
"""

from __future__ import annotations

import numba
import numpy as np

_FLOAT = np.float32
_JIT = dict(nogil=True, fastmath=True, boundscheck=False, error_model="numpy")


def _compiled(function):
    try:
        return numba.njit(cache=True, **_JIT)(function)
    except RuntimeError:  # no writable cache folder at all (say, no home folder): compile in each process
        return numba.njit(**_JIT)(function)


@_compiled
def linear_xyz(pixels, linear_table, xyz_from_linear, white_threshold, xyz, tissue):
    """uint8 sRGB ``pixels`` (N, 3) -> white-relative XYZ planes ``xyz`` (3, N); ``tissue`` (N,)
    is 1 where the darkest channel is below ``white_threshold``."""
    m00, m01, m02 = xyz_from_linear[0, 0], xyz_from_linear[0, 1], xyz_from_linear[0, 2]
    m10, m11, m12 = xyz_from_linear[1, 0], xyz_from_linear[1, 1], xyz_from_linear[1, 2]
    m20, m21, m22 = xyz_from_linear[2, 0], xyz_from_linear[2, 1], xyz_from_linear[2, 2]
    x_plane, y_plane, z_plane = xyz[0], xyz[1], xyz[2]
    for i in range(pixels.shape[0]):
        r, g, b = pixels[i, 0], pixels[i, 1], pixels[i, 2]
        tissue[i] = min(r, min(g, b)) < white_threshold
        lr, lg, lb = linear_table[r], linear_table[g], linear_table[b]
        x_plane[i] = m00 * lr + m01 * lg + m02 * lb
        y_plane[i] = m10 * lr + m11 * lg + m12 * lb
        z_plane[i] = m20 * lr + m21 * lg + m22 * lb


# Pixels per block: float32 sums of a block stay exact to well under a grey level before they
# join the float64 totals, and a block's look-up indices stay in the first-level cache.
_BLOCK = 4096


@_compiled
def _linear_piece(f, f_knee, slope, offset):
    # Below the knee the cube root was of t = f^3; CIELAB's f is slope * t + offset there.
    return f if f > f_knee else slope * f * f * f + offset


@_compiled
def finish_f_and_moments(f, tissue, f_knee, slope, offset):
    """Turn cube roots ``f`` (3, N) into CIELAB's f in place (the linear piece below ``f_knee``)
    and return the tissue's sums of L*, a*, b*, of their squares, and the tissue pixel count."""
    totals = np.zeros(7)
    for start in range(0, f.shape[1], _BLOCK):
        stop = start + _BLOCK
        fx_plane, fy_plane, fz_plane, weights = f[0, start:stop], f[1, start:stop], f[2, start:stop], tissue[start:stop]
        s_l = s_a = s_b = q_l = q_a = q_b = count = _FLOAT(0.0)
        for i in range(weights.shape[0]):
            fx = _linear_piece(fx_plane[i], f_knee, slope, offset)
            fy = _linear_piece(fy_plane[i], f_knee, slope, offset)
            fz = _linear_piece(fz_plane[i], f_knee, slope, offset)
            fx_plane[i], fy_plane[i], fz_plane[i] = fx, fy, fz
            lightness = _FLOAT(116.0) * fy - _FLOAT(16.0)
            a = _FLOAT(500.0) * (fx - fy)
            b = _FLOAT(200.0) * (fy - fz)
            weight = _FLOAT(weights[i])
            count += weight
            s_l += weight * lightness
            s_a += weight * a
            s_b += weight * b
            q_l += weight * lightness * lightness
            q_a += weight * a * a
            q_b += weight * b * b
        totals += np.array((s_l, s_a, s_b, q_l, q_a, q_b, count))
    return totals


@_compiled
def f_to_srgb(f, f_map, linear_from_xyz, encode_table, out, f_knee, slope, offset):
    """Map CIELAB f planes (3, N) by the affine ``f_map`` (3, 4), back to XYZ, linear RGB and,
    through the 65,536-entry ``encode_table``, uint8 sRGB ``out`` (N, 3)."""
    p00, p01, p02, p03 = f_map[0, 0], f_map[0, 1], f_map[0, 2], f_map[0, 3]
    p10, p11, p12, p13 = f_map[1, 0], f_map[1, 1], f_map[1, 2], f_map[1, 3]
    p20, p21, p22, p23 = f_map[2, 0], f_map[2, 1], f_map[2, 2], f_map[2, 3]
    n00, n01, n02 = linear_from_xyz[0, 0], linear_from_xyz[0, 1], linear_from_xyz[0, 2]
    n10, n11, n12 = linear_from_xyz[1, 0], linear_from_xyz[1, 1], linear_from_xyz[1, 2]
    n20, n21, n22 = linear_from_xyz[2, 0], linear_from_xyz[2, 1], linear_from_xyz[2, 2]
    zero, one, half = _FLOAT(0.0), _FLOAT(1.0), _FLOAT(0.5)
    steps = _FLOAT(encode_table.shape[0] - 1)
    index = np.empty((3, _BLOCK), np.int32)
    r_index, g_index, b_index = index[0], index[1], index[2]
    for start in range(0, f.shape[1], _BLOCK):
        stop = start + _BLOCK
        fx_plane, fy_plane, fz_plane, out_block = f[0, start:stop], f[1, start:stop], f[2, start:stop], out[start:stop]
        for i in range(out_block.shape[0]):
            fx, fy, fz = fx_plane[i], fy_plane[i], fz_plane[i]
            f0 = p00 * fx + p01 * fy + p02 * fz + p03
            f1 = p10 * fx + p11 * fy + p12 * fz + p13
            f2 = p20 * fx + p21 * fy + p22 * fz + p23
            x = f0 * f0 * f0 if f0 > f_knee else (f0 - offset) / slope
            y = f1 * f1 * f1 if f1 > f_knee else (f1 - offset) / slope
            z = f2 * f2 * f2 if f2 > f_knee else (f2 - offset) / slope
            r_index[i] = np.int32(min(max(n00 * x + n01 * y + n02 * z, zero), one) * steps + half)
            g_index[i] = np.int32(min(max(n10 * x + n11 * y + n12 * z, zero), one) * steps + half)
            b_index[i] = np.int32(min(max(n20 * x + n21 * y + n22 * z, zero), one) * steps + half)
        # Look-ups do not vectorise: a loop of their own keeps the arithmetic above vectorised.
        for i in range(out_block.shape[0]):
            out_block[i, 0] = encode_table[r_index[i]]
            out_block[i, 1] = encode_table[g_index[i]]
            out_block[i, 2] = encode_table[b_index[i]]
