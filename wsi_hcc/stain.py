"""Stain normalisation: Macenko (2009) and Reinhard (2001), fitted to a reference image.

Both normalisers work on uint8 RGB, one image ``(H, W, 3)`` or a batch ``(N, H, W, 3)``, and
serialise their fitted reference to JSON, so that a model is always used with the normalisation
it was trained with. Only tissue pixels inform a fit: glass and near-white pixels are left out,
and a reference without tissue is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import WsiHccError

__all__ = ["StainError", "MacenkoNormalizer", "ReinhardNormalizer", "normalizer_from_dict"]

# Fewer tissue pixels than this cannot define stain vectors or colour statistics.
_MIN_TISSUE_PIXELS = 64


class StainError(WsiHccError):
    """A reference or image cannot be used for stain normalisation."""


def _as_batch(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
        raise StainError(f"expected uint8 RGB of shape (H, W, 3) or (N, H, W, 3), got {rgb.dtype} {rgb.shape}")
    return (rgb[None], True) if rgb.ndim == 3 else (rgb, False)


# --- Macenko -------------------------------------------------------------------------------------


@dataclass
class MacenkoNormalizer:
    """Macenko et al., ISBI 2009: stain vectors from the extreme angles of optical density.

    Parameters
    ----------
    io : float
        Transmitted light intensity (the brightness of glass).
    alpha : float
        Percentile of the angle distribution taken as each stain's extreme.
    beta : float
        Optical density below which a pixel (in any channel) counts as background.
    mask_background : bool
        Take the 99th-percentile concentrations over tissue pixels only (default), so that glass
        does not shift them. False reproduces torchstain, which takes them over all pixels.

    Attributes
    ----------
    stain_matrix : numpy.ndarray or None
        ``(3, 2)`` reference optical-density vectors, hematoxylin then eosin (after ``fit``).
    max_concentrations : numpy.ndarray or None
        ``(2,)`` 99th-percentile reference concentrations.
    """

    io: float = 240.0
    alpha: float = 1.0
    beta: float = 0.15
    mask_background: bool = True
    stain_matrix: np.ndarray | None = field(default=None, repr=False)
    max_concentrations: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        # Optical density of each uint8 value: a table instead of a log per pixel.
        self._od_table = (-np.log((np.arange(256, dtype=np.float64) + 1) / self.io)).astype(np.float32)

    def fit(self, reference: np.ndarray) -> MacenkoNormalizer:
        """Estimate the reference stain vectors and concentrations from tissue pixels."""
        rgb, _ = _as_batch(reference)
        stains, concentrations = self._estimate(rgb.reshape(-1, 3), "reference")
        self.stain_matrix = stains
        self.max_concentrations = concentrations
        return self

    def transform(self, rgb: np.ndarray) -> np.ndarray:
        """Map each image's stains onto the reference's. Same shape and dtype as the input."""
        if self.stain_matrix is None:
            raise StainError("MacenkoNormalizer.transform before fit; call fit(reference) first")
        batch, single = _as_batch(rgb)
        out = np.empty_like(batch)
        for i, image in enumerate(batch):
            out[i] = self._transform_one(image)
        return out[0] if single else out

    __call__ = transform

    def _transform_one(self, image: np.ndarray) -> np.ndarray:
        pixels = image.reshape(-1, 3)
        od = self._od_table[pixels]
        try:
            stains, max_c = self._estimate(pixels, "image", od)
        except StainError:
            return image.copy()  # a tile of glass has no stains to map: leave it as it is
        concentrations = np.linalg.pinv(stains).astype(np.float32) @ od.T
        concentrations *= (self.max_concentrations / max_c).astype(np.float32)[:, None]
        rebuilt = self.io * np.exp(-(self.stain_matrix.astype(np.float32) @ concentrations))
        return np.minimum(rebuilt, 255).T.astype(np.uint8).reshape(image.shape)

    def _estimate(self, pixels: np.ndarray, what: str, od: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stain matrix ``(3, 2)`` and 99th-percentile concentrations ``(2,)`` of ``(P, 3)`` pixels."""
        if od is None:
            od = self._od_table[pixels]
        tissue = od[(od >= self.beta).all(axis=1)]
        if len(tissue) < _MIN_TISSUE_PIXELS:
            raise StainError(f"the {what} has no tissue ({len(tissue)} pixels above optical density "
                             f"{self.beta}); use an image with stained tissue")
        _, vectors = np.linalg.eigh(np.cov(tissue.T.astype(np.float64)))
        plane = vectors[:, 1:3]
        projected = tissue @ plane.astype(np.float32)
        angles = np.arctan2(projected[:, 1], projected[:, 0])
        low, high = np.percentile(angles, [self.alpha, 100 - self.alpha])
        v_low = plane @ np.array([np.cos(low), np.sin(low)])
        v_high = plane @ np.array([np.cos(high), np.sin(high)])
        # Hematoxylin absorbs red most: the vector with the larger red component comes first.
        stains = np.stack([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low], axis=1)
        concentrations = np.linalg.pinv(stains).astype(np.float32) @ (tissue if self.mask_background else od).T
        max_c = np.percentile(concentrations, 99, axis=1)
        return stains, max_c

    def to_dict(self) -> dict[str, Any]:
        if self.stain_matrix is None:
            raise StainError("nothing to save: the normaliser is not fitted")
        return {"method": "macenko", "version": 1, "io": self.io, "alpha": self.alpha, "beta": self.beta,
                "mask_background": self.mask_background,
                "stain_matrix": np.asarray(self.stain_matrix).tolist(),
                "max_concentrations": np.asarray(self.max_concentrations).tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MacenkoNormalizer:
        _check_method(data, "macenko")
        return cls(io=float(data["io"]), alpha=float(data["alpha"]), beta=float(data["beta"]),
                   mask_background=bool(data["mask_background"]),
                   stain_matrix=np.asarray(data["stain_matrix"], dtype=np.float64),
                   max_concentrations=np.asarray(data["max_concentrations"], dtype=np.float64))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


# --- Reinhard ------------------------------------------------------------------------------------


@dataclass
class ReinhardNormalizer:
    """Reinhard et al., 2001: match the per-channel mean and standard deviation in CIELAB.

    Statistics come from tissue pixels only (``mask_background``: pixels whose darkest channel
    is below ``white_threshold``), so glass and fat do not shift them; the mapping is then applied
    to every pixel. ``mask_background=False`` reproduces torchstain, which uses all pixels.

    Attributes
    ----------
    means, stds : numpy.ndarray or None
        ``(3,)`` reference L*, a*, b* statistics (after ``fit``).
    """

    white_threshold: int = 230
    mask_background: bool = True
    means: np.ndarray | None = field(default=None, repr=False)
    stds: np.ndarray | None = field(default=None, repr=False)

    def fit(self, reference: np.ndarray) -> ReinhardNormalizer:
        rgb, _ = _as_batch(reference)
        lab = _rgb_to_lab(rgb.reshape(-1, 3))
        self.means, self.stds = self._stats(rgb.reshape(-1, 3), lab, "reference")
        return self

    def transform(self, rgb: np.ndarray) -> np.ndarray:
        if self.means is None:
            raise StainError("ReinhardNormalizer.transform before fit; call fit(reference) first")
        batch, single = _as_batch(rgb)
        out = np.empty_like(batch)
        for i, image in enumerate(batch):
            pixels = image.reshape(-1, 3)
            lab = _rgb_to_lab(pixels)
            try:
                means, stds = self._stats(pixels, lab, "image")
            except StainError:
                out[i] = image
                continue
            lab = (lab - means) * (self.stds / np.maximum(stds, 1e-6)).astype(np.float32) + self.means.astype(np.float32)
            out[i] = _lab_to_rgb(lab).reshape(image.shape)
        return out[0] if single else out

    __call__ = transform

    def _stats(self, pixels: np.ndarray, lab: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        tissue = lab[pixels.min(axis=1) < self.white_threshold] if self.mask_background else lab
        if len(tissue) < _MIN_TISSUE_PIXELS:
            raise StainError(f"the {what} has no tissue (every pixel is brighter than "
                             f"{self.white_threshold}); use an image with stained tissue")
        return tissue.mean(axis=0, dtype=np.float64), tissue.std(axis=0, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        if self.means is None:
            raise StainError("nothing to save: the normaliser is not fitted")
        return {"method": "reinhard", "version": 1, "white_threshold": self.white_threshold,
                "mask_background": self.mask_background,
                "means": np.asarray(self.means).tolist(), "stds": np.asarray(self.stds).tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReinhardNormalizer:
        _check_method(data, "reinhard")
        return cls(white_threshold=int(data["white_threshold"]), mask_background=bool(data["mask_background"]),
                   means=np.asarray(data["means"], dtype=np.float64),
                   stds=np.asarray(data["stds"], dtype=np.float64))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


def _check_method(data: dict[str, Any], method: str) -> None:
    if data.get("method") != method:
        raise StainError(f"expected a saved {method} reference, got method {data.get('method')!r}")


def normalizer_from_dict(data: dict[str, Any]) -> MacenkoNormalizer | ReinhardNormalizer:
    """Rebuild a fitted normaliser from ``to_dict()`` output (e.g. read from a model card)."""
    kinds = {"macenko": MacenkoNormalizer, "reinhard": ReinhardNormalizer}
    if data.get("method") not in kinds:
        raise StainError(f"unknown stain method {data.get('method')!r}; expected one of {', '.join(kinds)}")
    return kinds[data["method"]].from_dict(data)


# --- CIELAB (sRGB, D65) --------------------------------------------------------------------------

_RGB_TO_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                        [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]])
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
# sRGB decoding of each uint8 value, as a table.
_LINEAR = np.where(np.arange(256) / 255 > 0.04045, ((np.arange(256) / 255 + 0.055) / 1.055) ** 2.4,
                   np.arange(256) / 255 / 12.92).astype(np.float32)
_EPSILON, _KAPPA = 0.008856, 7.787


def _rgb_to_lab(pixels: np.ndarray) -> np.ndarray:
    """``(P, 3)`` uint8 sRGB to ``(P, 3)`` float32 L*, a*, b*."""
    xyz = _LINEAR[pixels] @ (_RGB_TO_XYZ / _WHITE_D65[:, None]).T.astype(np.float32)
    f = np.where(xyz > _EPSILON, np.cbrt(xyz), _KAPPA * xyz + 16 / 116)
    lab = np.empty_like(f)
    lab[:, 0] = 116 * f[:, 1] - 16
    lab[:, 1] = 500 * (f[:, 0] - f[:, 1])
    lab[:, 2] = 200 * (f[:, 1] - f[:, 2])
    return lab


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """``(P, 3)`` float L*, a*, b* to ``(P, 3)`` uint8 sRGB (clipped)."""
    fy = (lab[:, 0] + 16) / 116
    f = np.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], axis=1)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16 / 116) / _KAPPA) * _WHITE_D65.astype(np.float32)
    linear = np.clip(xyz @ np.linalg.inv(_RGB_TO_XYZ).T.astype(np.float32), 0, 1)
    srgb = np.where(linear > 0.0031308, 1.055 * np.power(linear, 1 / 2.4) - 0.055, linear * 12.92)
    return np.clip(srgb * 255 + 0.5, 0, 255).astype(np.uint8)
