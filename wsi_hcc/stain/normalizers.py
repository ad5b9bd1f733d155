"""Stain normalisation: Macenko (2009) and Reinhard (2001), fitted to a reference image.

Both normalisers work on uint8 RGB, one image ``(H, W, 3)`` or a batch ``(N, H, W, 3)``, and
serialise their fitted reference to JSON, so that a model is always used with the normalisation
it was trained with. Only tissue pixels inform a fit: glass and near-white pixels are left out,
and a reference without tissue is an error.

Numpy arrays are normalised image by image: Macenko with numpy and OpenCV, Reinhard with the
compiled CIELAB loops of :mod:`wsi_hcc.stain.cielab`. ``torch.Tensor`` input, also
channels last, goes to :mod:`wsi_hcc.stain.torch_normalizers`: the same computation in torch on the tensor's
device (a GPU when the tensor is there), a batch in one vectorised pass, uint8 tensors out. Both
paths share one fitted reference and agree to within a grey level. torch is imported only when a
tensor arrives: tiling workers import this module, and loading torch would add seconds to each.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from wsi_hcc.stain.common import MIN_TISSUE_PIXELS, StainError

if TYPE_CHECKING:
    import torch

__all__ = ["MacenkoNormalizer", "ReinhardNormalizer", "normalizer_from_dict"]

def _is_tensor(rgb: Any) -> bool:
    # Without importing torch: a tensor can only exist once torch has been imported.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(rgb, torch.Tensor)


def _torch_backend():
    """The torch implementation, imported on first use so that numpy users never load torch."""
    from wsi_hcc.stain import torch_normalizers as stain_torch

    return stain_torch


class _Scratch(threading.local):
    """Work buffers reused from one image to the next, one set per thread.

    On 256 px tiles, OpenCV allocating (and the kernel faulting in) a fresh output array cost
    about as much as the arithmetic that fills it; reusing buffers removes that cost. Only
    tile-sized images are cached, so a thread never holds more than a few megabytes.
    """

    MAX_CACHED_VALUES = 3 * 1024 * 1024  # a 1024 px RGB image

    def __init__(self):
        self.buffers: dict[tuple, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        if math.prod(shape) > self.MAX_CACHED_VALUES:
            return np.empty(shape, dtype)
        key = (name, shape, np.dtype(dtype))
        buffer = self.buffers.get(key)
        if buffer is None:
            if len(self.buffers) > 16:  # many tile sizes in one thread: start over
                self.buffers.clear()
            buffer = self.buffers[key] = np.empty(shape, dtype)
        return buffer


_SCRATCH = _Scratch()


def _lookup(values: np.ndarray, table: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``table[values]`` for uint8 ``values`` and a 256-entry float32 ``table``: OpenCV's LUT gives
    the same numbers several times faster than numpy's fancy indexing."""
    import cv2

    return cv2.LUT(np.ascontiguousarray(values), table, dst=out)


def _as_batch(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
        raise StainError(f"expected uint8 RGB of shape (H, W, 3) or (N, H, W, 3), got {rgb.dtype} {rgb.shape}")
    return (rgb[None], True) if rgb.ndim == 3 else (rgb, False)


class _Normalizer:
    """What both normalisers share: batches, torch dispatch, the fitted check, JSON."""

    def _fitted(self) -> bool:
        raise NotImplementedError

    def _transform_into(self, image: np.ndarray, out: np.ndarray) -> None:
        """Write the normalised ``image`` (H, W, 3) into ``out``, a uint8 array of its shape."""
        raise NotImplementedError

    def _transform_tensor(self, rgb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def transform(self, rgb: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Normalise ``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 RGB; same shape and dtype out.

        A numpy array is normalised with numpy and OpenCV. A ``torch.Tensor`` (channels last,
        like the arrays) is normalised with torch on its own device, a batch in one vectorised
        pass, and comes back as a uint8 tensor on that device. An image without tissue is
        returned unchanged.
        """
        if not self._fitted():
            raise StainError(f"{type(self).__name__}.transform before fit; call fit(reference) first")
        if _is_tensor(rgb):
            return self._transform_tensor(rgb)
        batch, single = _as_batch(rgb)
        out = np.empty_like(batch)
        for image, normalized in zip(batch, out):
            self._transform_into(image, normalized)
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

    def fit(self, reference: np.ndarray | torch.Tensor) -> MacenkoNormalizer:
        """Estimate the reference stain vectors and concentrations from tissue pixels.

        ``reference`` is uint8 RGB, one image or a batch fitted as a whole, as a numpy array or
        a ``torch.Tensor`` (computed with torch on its device); either gives the same reference.
        """
        if _is_tensor(reference):
            stains, concentrations = _torch_backend().macenko_fit(self, reference)
        else:
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
        od = _lookup(pixels, self._od_table)
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

    def _transform_into(self, image: np.ndarray, out: np.ndarray) -> None:
        od = _lookup(image, self._od_table, _SCRATCH.get("od", image.shape))
        try:
            stains, max_c = self._estimate(image.reshape(-1, 3), "image", od.reshape(-1, 3), subsample=True)
        except StainError:
            out[...] = image  # a tile of glass has no stains to map: leave it as it is
            return
        import cv2

        # Unmixing with the image's stains, rescaling and remixing with the reference's is one
        # 3x3 map in optical density; with io folded in as log(io), the output's log is an affine
        # map of OD, which OpenCV applies in one pass before one exp.
        unmix = np.linalg.pinv(stains) * (self.max_concentrations / max_c)[:, None]
        affine = np.hstack([-(self.stain_matrix @ unmix), np.full((3, 1), np.log(self.io))]).astype(np.float32)
        rebuilt = cv2.transform(od, affine, dst=_SCRATCH.get("rebuilt", image.shape))
        cv2.exp(rebuilt, dst=rebuilt)
        np.minimum(rebuilt, 255, out=rebuilt)
        np.copyto(out, rebuilt, casting="unsafe")  # truncates, as astype(uint8) does

    def _transform_tensor(self, rgb: torch.Tensor) -> torch.Tensor:
        return _torch_backend().macenko_transform(self, rgb)

    def _estimate(self, pixels: np.ndarray, what: str, od: np.ndarray | None = None,
                  subsample: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Stain matrix ``(3, 2)`` and 99th-percentile concentrations ``(2,)`` of ``(P, 3)`` pixels.

        ``subsample`` (for per-image estimates, not reference fits) applies ``estimate_pixels``.
        """
        if subsample and self.estimate_pixels and len(pixels) > self.estimate_pixels:
            stride = -(-len(pixels) // self.estimate_pixels)
            pixels = pixels[::stride]
            od = None if od is None else od[::stride]
        if od is None:
            od = _lookup(pixels, self._od_table)
        # OD falls as the value rises: a pixel is tissue in every channel iff its brightest channel is.
        brightest = np.maximum(np.maximum(pixels[:, 0], pixels[:, 1]), pixels[:, 2])
        is_tissue = self._od_table[brightest] >= self.beta
        tissue = np.compress(is_tissue, od, axis=0)  # faster than od[is_tissue] on a strided view
        if len(tissue) < MIN_TISSUE_PIXELS:
            raise StainError(f"the {what} has no tissue ({len(tissue)} pixels above optical density "
                             f"{self.beta}); use an image with stained tissue")
        _, vectors = np.linalg.eigh(np.cov(tissue.T.astype(np.float64)))
        # Eigenvectors come with either sign, and LAPACK builds and cuSOLVER choose differently.
        # H&E gives the same stains either way, but where the projected angles wrap around +-pi
        # (noise, pen, other stains) the sign would change them: point both axes towards the
        # mean optical density, so that every library and device finds the same stains.
        towards_mean = tissue.mean(axis=0, dtype=np.float64) @ vectors[:, 1:3]
        plane = vectors[:, 1:3] * np.where(towards_mean < 0, -1.0, 1.0)
        projected = tissue @ plane.astype(np.float32)
        angles = np.arctan2(projected[:, 1], projected[:, 0])
        # Percentiles of sorted values are the same numbers, and numpy's SIMD sort followed by an
        # easy partition beats partitioning unsorted values.
        low, high = np.percentile(np.sort(angles), [self.alpha, 100 - self.alpha])
        v_low = plane @ np.array([np.cos(low), np.sin(low)])
        v_high = plane @ np.array([np.cos(high), np.sin(high)])
        # Hematoxylin absorbs red most: the vector with the larger red component comes first.
        stains = np.stack([v_low, v_high] if v_low[0] > v_high[0] else [v_high, v_low], axis=1)
        concentrations = (tissue if self.mask_background else od) @ np.linalg.pinv(stains).T.astype(np.float32)
        max_c = np.percentile(np.sort(concentrations.T, axis=1), 99, axis=1)
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

    def fit(self, reference: np.ndarray | torch.Tensor) -> ReinhardNormalizer:
        """Fit the reference L*a*b* statistics from tissue pixels (numpy array or torch.Tensor)."""
        if _is_tensor(reference):
            self.means, self.stds = _torch_backend().reinhard_fit(self, reference)
            return self
        rgb, _ = _as_batch(reference)
        # All pixels as one image, so that a batch of references is fitted as a whole.
        moments = self._moments(rgb.reshape(-1, 3))
        if self._too_little_tissue(moments):
            raise StainError(f"the reference has no tissue (every pixel is brighter than "
                             f"{self.white_threshold}); use an image with stained tissue")
        self.means, self.stds = moments.means, moments.stds
        return self

    def _fitted(self) -> bool:
        return self.means is not None

    def _transform_into(self, image: np.ndarray, out: np.ndarray) -> None:
        from wsi_hcc.stain.cielab import reinhard_to_srgb

        n_pixels = image.shape[0] * image.shape[1]
        moments = self._moments(image.reshape(-1, 3), _SCRATCH.get("lab_f", (3, n_pixels)),
                                _SCRATCH.get("tissue", (n_pixels,), np.uint8))
        if self._too_little_tissue(moments):
            out[...] = image  # a tile of glass has no colours to map: leave it as it is
            return
        scale = self.stds / np.maximum(moments.stds, 1e-6)
        reinhard_to_srgb(moments.f, scale, self.means - moments.means * scale, out.reshape(-1, 3))

    def _transform_tensor(self, rgb: torch.Tensor) -> torch.Tensor:
        return _torch_backend().reinhard_transform(self, rgb)

    def _moments(self, pixels: np.ndarray, f: np.ndarray | None = None, tissue: np.ndarray | None = None):
        from wsi_hcc.stain.cielab import lab_moments

        return lab_moments(pixels, self.white_threshold if self.mask_background else None, f, tissue)

    def _too_little_tissue(self, moments) -> bool:
        return self.mask_background and moments.n_tissue < MIN_TISSUE_PIXELS

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
