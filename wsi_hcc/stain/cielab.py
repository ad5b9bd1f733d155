"""sRGB (D65) to CIELAB and back, with OpenCV's constants, for Reinhard normalisation.

Reinhard's map is an affine map of each L*, a*, b* channel. L*, a* and b* are themselves affine
in CIELAB's ``f = (f(X/Xn), f(Y/Yn), f(Z/Zn))``, so the whole map is one affine map of ``f``:
a tile goes to ``f`` once (the cube root is numpy's vectorised one), its statistics come from
``f`` without forming L*a*b*, and the mapped ``f`` goes straight back to sRGB, the last step
through a 65,536-entry table (linear light to uint8 sRGB, within 0.03 of a grey level before
rounding). The loops are compiled by numba (:mod:`wsi_hcc.stain.cielab_kernels`, imported on first
use): chained OpenCV conversions cost about 1.9 ms per 256 px tile, these about 0.8 ms.

Planes are ``(3, N)`` float32 and pixels ``(N, 3)`` uint8; callers pass work buffers so that a
stream of tiles allocates nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LabMoments", "lab_moments", "reinhard_to_srgb", "srgb_to_lab",
           "SRGB_TO_LINEAR", "XYZ_FROM_RGB", "RGB_FROM_XYZ", "WHITE", "T_KNEE", "F_KNEE", "SLOPE", "GAMMA_KNEE"]

# OpenCV's constants (its float conversions and our torch path use the same ones).
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
RGB_FROM_XYZ = np.array([[3.240479, -1.53715, -0.498535],
                         [-0.969256, 1.875991, 0.041556],
                         [0.055648, -0.204043, 1.057311]])
WHITE = np.array([0.950456, 1.0, 1.088754])
T_KNEE = 0.008856  # (6/29)^3: below it, CIELAB's cube root turns linear...
F_KNEE = 6 / 29  # ...which is where f, going back, stops being cubed
SLOPE = 7.787  # (29/3)^3 / 116, the slope of f on the linear piece
OFFSET = 16 / 116  # f on the linear piece is SLOPE * t + OFFSET
GAMMA_KNEE = 0.0031308  # linear sRGB below which the encoding is linear, with slope 12.92

# L*, a*, b* = LAB_FROM_F @ f + LAB_OFFSET
LAB_FROM_F = np.array([[0.0, 116.0, 0.0], [500.0, -500.0, 0.0], [0.0, 200.0, -200.0]])
LAB_OFFSET = np.array([-16.0, 0.0, 0.0])
F_FROM_LAB = np.linalg.inv(LAB_FROM_F)


def _srgb_to_linear_table() -> np.ndarray:
    unit = np.arange(256) / 255
    return np.where(unit <= 0.04045, unit / 12.92, ((unit + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _linear_to_srgb_table(steps: int = 65536) -> np.ndarray:
    # Rounds half up, as the float path's +0.5-and-truncate did.
    unit = np.arange(steps) / (steps - 1)
    encoded = np.where(unit <= GAMMA_KNEE, unit * 12.92, 1.055 * unit ** (1 / 2.4) - 0.055)
    return np.floor(np.clip(encoded * 255 + 0.5, 0, 255)).astype(np.uint8)


SRGB_TO_LINEAR = _srgb_to_linear_table()
_LINEAR_TO_SRGB = _linear_to_srgb_table()
_XYZ_FROM_LINEAR = (XYZ_FROM_RGB / WHITE[:, None]).astype(np.float32)  # XYZ relative to the white
_LINEAR_FROM_XYZ = (RGB_FROM_XYZ * WHITE[None, :]).astype(np.float32)
_KNEES = (np.float32(F_KNEE), np.float32(SLOPE), np.float32(OFFSET))


@dataclass(frozen=True)
class LabMoments:
    """The L*, a*, b* statistics of an image's tissue and the image's CIELAB ``f`` planes.

    Attributes
    ----------
    f : numpy.ndarray
        ``(3, N)`` float32 f(X/Xn), f(Y/Yn), f(Z/Zn) of every pixel (tissue or not).
    means, stds : numpy.ndarray
        ``(3,)`` float64 mean and (population) standard deviation of L*, a*, b* over the tissue.
    n_tissue : int
        Pixels counted as tissue.
    """

    f: np.ndarray
    means: np.ndarray
    stds: np.ndarray
    n_tissue: int


def _kernels():
    from wsi_hcc.stain import cielab_kernels

    return cielab_kernels


def lab_moments(pixels: np.ndarray, white_threshold: int | None, f: np.ndarray | None = None,
                tissue: np.ndarray | None = None) -> LabMoments:
    """CIELAB statistics of ``pixels`` (N, 3) uint8 sRGB, over the pixels whose darkest channel is
    below ``white_threshold`` (every pixel when it is None).

    ``f`` ((3, N) float32) and ``tissue`` ((N,) uint8) are optional work buffers; ``f`` is returned
    filled, for :func:`reinhard_to_srgb`.
    """
    kernels = _kernels()
    n = pixels.shape[0]
    f = np.empty((3, n), np.float32) if f is None else f
    tissue = np.empty(n, np.uint8) if tissue is None else tissue
    threshold = 256 if white_threshold is None else int(white_threshold)
    kernels.linear_xyz(np.ascontiguousarray(pixels), SRGB_TO_LINEAR, _XYZ_FROM_LINEAR, threshold, f, tissue)
    np.cbrt(f, out=f)
    totals = kernels.finish_f_and_moments(f, tissue, *_KNEES)
    count = int(totals[6])
    if count == 0:
        return LabMoments(f, np.full(3, np.nan), np.full(3, np.nan), 0)
    means = totals[:3] / count
    stds = np.sqrt(np.maximum(totals[3:6] / count - means * means, 0))
    return LabMoments(f, means, stds, count)


def reinhard_to_srgb(f: np.ndarray, scale: np.ndarray, shift: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write to ``out`` ((N, 3) uint8) the sRGB of the pixels whose CIELAB ``f`` planes are ``f``
    after ``lab * scale + shift`` per channel (clipped to the sRGB gamut)."""
    # lab' = S (T f + t) + shift, and f' = T^-1 (lab' - t): one affine map of f.
    scaled = scale[:, None] * LAB_FROM_F
    f_map = np.empty((3, 4), np.float32)
    f_map[:, :3] = F_FROM_LAB @ scaled
    f_map[:, 3] = F_FROM_LAB @ (scale * LAB_OFFSET + shift - LAB_OFFSET)
    _kernels().f_to_srgb(f, f_map, _LINEAR_FROM_XYZ, _LINEAR_TO_SRGB, out, *_KNEES)
    return out


def srgb_to_lab(image: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 sRGB to float32 L* [0, 100], a*, b* of the same shape."""
    moments = lab_moments(image.reshape(-1, 3), None)
    lab = LAB_FROM_F.astype(np.float32) @ moments.f + LAB_OFFSET.astype(np.float32)[:, None]
    return np.ascontiguousarray(lab.T).reshape(image.shape)
