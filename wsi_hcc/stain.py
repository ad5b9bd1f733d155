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


class _Normalizer:
    """What both normalisers share: batches, the fitted check, JSON."""

    def _fitted(self) -> bool:
        raise NotImplementedError

    def _transform_one(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def transform(self, rgb: np.ndarray) -> np.ndarray:
        """Normalise ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 RGB; same shape and dtype out.

        An image without tissue is returned unchanged.
        """
        if not self._fitted():
            raise StainError(f"{type(self).__name__}.transform before fit; call fit(reference) first")
        batch, single = _as_batch(rgb)
        out = np.empty_like(batch)
        for i, image in enumerate(batch):
            out[i] = self._transform_one(image)
        return out[0] if single else out

    __call__ = transform

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


# --- Macenko -------------------------------------------------------------------------------------


@dataclass
class MacenkoNormalizer(_Normalizer):
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
    estimate_pixels : int or None
        Estimate each transformed image's stains from at most this many pixels, taken at a regular
        stride (percentiles of 16k pixels are nearly as stable as of 65k, at a quarter of the
        cost); None uses all, as torchstain does. Reference fits always use every pixel.

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
    estimate_pixels: int | None = 16384
    stain_matrix: np.ndarray | None = field(default=None, repr=False)
    max_concentrations: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        # Optical density of each uint8 value: a table instead of a log per pixel.
        self._od_table = (-np.log((np.arange(256, dtype=np.float64) + 1) / self.io)).astype(np.float32)

    def fit(self, reference: np.ndarray) -> MacenkoNormalizer:
        """Estimate the reference stain vectors and concentrations from tissue pixels."""
        rgb, _ = _as_batch(reference)
        stains, concentrations = self._estimate(rgb.reshape(-1, 3), "reference")
        # float64, exactly as they come back from JSON, so a restored reference gives the same pixels.
        self.stain_matrix = np.asarray(stains, dtype=np.float64)
        self.max_concentrations = np.asarray(concentrations, dtype=np.float64)
        return self

    def _fitted(self) -> bool:
        return self.stain_matrix is not None

    def unmix(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """An image's own stains: matrix ``(3, 2)``, per-pixel concentrations ``(H*W, 2)``, and the
        residual optical density ``(H*W, 3)`` that the two stains do not explain.

        Works without a fit (stain augmentation perturbs the concentrations). Raises StainError
        for an image without tissue.
        """
        pixels = _as_batch(image)[0][0].reshape(-1, 3)
        od = self._od_table[pixels]
        stains, _ = self._estimate(pixels, "image", od, subsample=True)
        concentrations = od @ np.linalg.pinv(stains).T.astype(np.float32)
        residual = od - concentrations @ stains.T.astype(np.float32)
        return stains, concentrations, residual

    def remix(self, stains: np.ndarray, concentrations: np.ndarray, residual: np.ndarray,
              shape: tuple[int, ...]) -> np.ndarray:
        """The exact inverse of ``unmix``: uint8 RGB of ``shape`` from its three parts."""
        od = concentrations.astype(np.float32) @ stains.T.astype(np.float32) + residual
        rebuilt = np.exp(-od) * np.float32(self.io) - 1  # inverts od = -log((value + 1) / io)
        np.clip(rebuilt + 0.5, 0, 255, out=rebuilt)
        return rebuilt.astype(np.uint8).reshape(shape)

    def _transform_one(self, image: np.ndarray) -> np.ndarray:
        pixels = image.reshape(-1, 3)
        od = self._od_table[pixels]
        try:
            stains, max_c = self._estimate(pixels, "image", od, subsample=True)
        except StainError:
            return image.copy()  # a tile of glass has no stains to map: leave it as it is
        import cv2

        # Unmixing with the image's stains, rescaling and remixing with the reference's is one
        # 3x3 map in optical density; with io folded in as log(io), the output's log is an affine
        # map of OD, which OpenCV applies in one pass before one exp.
        unmix = np.linalg.pinv(stains) * (self.max_concentrations / max_c)[:, None]
        affine = np.hstack([-(self.stain_matrix @ unmix), np.full((3, 1), np.log(self.io))]).astype(np.float32)
        rebuilt = cv2.exp(cv2.transform(od.reshape(image.shape), affine))
        np.minimum(rebuilt, 255, out=rebuilt)
        return rebuilt.astype(np.uint8)

    def _estimate(self, pixels: np.ndarray, what: str, od: np.ndarray | None = None,
                  subsample: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Stain matrix ``(3, 2)`` and 99th-percentile concentrations ``(2,)`` of ``(P, 3)`` pixels.

        ``subsample`` (for per-image estimates, not reference fits) applies ``estimate_pixels``.
        """
        if subsample and self.estimate_pixels and len(pixels) > self.estimate_pixels:
            stride = -(-len(pixels) // self.estimate_pixels)
            pixels = pixels[::stride]
            od = None
        if od is None:
            od = self._od_table[pixels]
        # OD falls as the value rises: a pixel is tissue in every channel iff its brightest channel is.
        brightest = np.maximum(np.maximum(pixels[:, 0], pixels[:, 1]), pixels[:, 2])
        is_tissue = self._od_table[brightest] >= self.beta
        tissue = od[is_tissue]
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
        concentrations = (tissue if self.mask_background else od) @ np.linalg.pinv(stains).T.astype(np.float32)
        max_c = np.percentile(concentrations, 99, axis=0)
        return stains, max_c

    def to_dict(self) -> dict[str, Any]:
        if self.stain_matrix is None:
            raise StainError("nothing to save: the normaliser is not fitted")
        return {"method": "macenko", "version": 1, "io": self.io, "alpha": self.alpha, "beta": self.beta,
                "mask_background": self.mask_background, "estimate_pixels": self.estimate_pixels,
                "stain_matrix": np.asarray(self.stain_matrix).tolist(),
                "max_concentrations": np.asarray(self.max_concentrations).tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MacenkoNormalizer:
        _check_method(data, "macenko")
        return cls(io=float(data["io"]), alpha=float(data["alpha"]), beta=float(data["beta"]),
                   mask_background=bool(data["mask_background"]), estimate_pixels=data.get("estimate_pixels"),
                   stain_matrix=np.asarray(data["stain_matrix"], dtype=np.float64),
                   max_concentrations=np.asarray(data["max_concentrations"], dtype=np.float64))


# --- Reinhard ------------------------------------------------------------------------------------


@dataclass
class ReinhardNormalizer(_Normalizer):
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
        # One tall image, so that a batch of references is fitted as a whole.
        tall = np.ascontiguousarray(rgb.reshape(-1, rgb.shape[2], 3))
        self.means, self.stds = self._stats(tall, _rgb_to_lab(tall), "reference")
        return self

    def _fitted(self) -> bool:
        return self.means is not None

    def _transform_one(self, image: np.ndarray) -> np.ndarray:
        import cv2

        lab = _rgb_to_lab(image)
        try:
            means, stds = self._stats(image, lab, "image")
        except StainError:
            return image.copy()  # a tile of glass has no colours to map: leave it as it is
        scale = self.stds / np.maximum(stds, 1e-6)
        # lab' = (lab - mean) * scale + reference mean, per channel, in one pass.
        affine = np.hstack([np.diag(scale), (self.means - means * scale)[:, None]]).astype(np.float32)
        return _lab_to_rgb(cv2.transform(lab, affine))

    def _stats(self, image: np.ndarray, lab: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation of ``lab`` over the tissue of ``image`` (H, W, 3)."""
        import cv2

        mask = None
        if self.mask_background:
            darkest = np.minimum(np.minimum(image[..., 0], image[..., 1]), image[..., 2])
            mask = (darkest < self.white_threshold).view(np.uint8)
            if int(cv2.countNonZero(mask)) < _MIN_TISSUE_PIXELS:
                raise StainError(f"the {what} has no tissue (every pixel is brighter than "
                                 f"{self.white_threshold}); use an image with stained tissue")
        means, stds = cv2.meanStdDev(lab, mask=mask)
        return means.ravel(), stds.ravel()

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
# OpenCV's float conversions: standard CIELAB, about 10x faster than numpy formulas.


_UNIT = (np.arange(256) / 255).astype(np.float32)


def _rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 sRGB to ``(H, W, 3)`` float32 L* [0, 100], a*, b*."""
    import cv2

    return cv2.cvtColor(_UNIT[image], cv2.COLOR_RGB2Lab)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 L*, a*, b* to ``(H, W, 3)`` uint8 sRGB (clipped)."""
    import cv2

    rgb = cv2.cvtColor(lab, cv2.COLOR_Lab2RGB)
    rgb *= 255
    rgb += 0.5
    np.clip(rgb, 0, 255, out=rgb)
    return rgb.astype(np.uint8)
