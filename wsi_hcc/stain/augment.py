"""Stain and colour augmentation: albumentations pipelines described in YAML, plus a Macenko
stain augmentation that works alone and inside ``A.Compose``.

Every random draw comes from the transform's own generator, so a pipeline built with a seed
(``A.Compose(..., seed=...)`` or ``load_augmentation(path, seed=...)``) is reproducible.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.errors import ConfigError
from wsi_hcc.stain.common import StainError
from wsi_hcc.stain.normalizers import MacenkoNormalizer
from wsi_hcc.utils.config import locate_config

__all__ = ["MacenkoStainAugment", "build_augmentation", "load_augmentation", "augment_samples", "preview_grid",
           "reseed_augmentation"]

try:
    import albumentations as A
except ImportError as exc:  # albumentations is a core dependency; say so clearly if it is missing
    raise ImportError("wsi_hcc.stain.augment needs albumentations: pip install albumentations") from exc


class MacenkoStainAugment(A.ImageOnlyTransform):
    """Perturb an image's own stain concentrations in Macenko's stain space.

    Each stain's concentration is scaled by ``U(1 - sigma_scale, 1 + sigma_scale)`` and shifted by
    ``U(-sigma_shift, sigma_shift)`` (Tellez et al. 2018 in the spirit of torchstain's
    MacenkoAugmentor); tiles without tissue pass unchanged.

    Parameters
    ----------
    sigma_scale, sigma_shift : float
        Strength of the multiplicative and additive perturbations.
    io, alpha, beta : float
        Macenko parameters (see ``wsi_hcc.stain.MacenkoNormalizer``).
    p : float
        Probability of applying the transform.
    """

    def __init__(self, sigma_scale: float = 0.2, sigma_shift: float = 0.05, io: float = 240.0,
                 alpha: float = 1.0, beta: float = 0.15, p: float = 0.5):
        super().__init__(p=p)
        self.sigma_scale = sigma_scale
        self.sigma_shift = sigma_shift
        self.io, self.alpha, self.beta = io, alpha, beta
        self._macenko = MacenkoNormalizer(io=io, alpha=alpha, beta=beta)

    def get_params(self) -> dict[str, Any]:
        rng = self.random_generator
        return {"scale": rng.uniform(1 - self.sigma_scale, 1 + self.sigma_scale, size=2),
                "shift": rng.uniform(-self.sigma_shift, self.sigma_shift, size=2)}

    def apply(self, img: np.ndarray, scale: np.ndarray, shift: np.ndarray, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"MacenkoStainAugment needs uint8 RGB (H, W, 3), got {img.dtype} {img.shape}")
        try:
            stains, concentrations, residual = self._macenko.unmix(img)
        except StainError:
            return img
        concentrations = concentrations * scale.astype(np.float32) + shift.astype(np.float32)
        return self._macenko.remix(stains, concentrations, residual, img.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("sigma_scale", "sigma_shift", "io", "alpha", "beta")


_OURS = {"MacenkoStainAugment": MacenkoStainAugment}


def build_augmentation(steps: list[dict[str, dict[str, Any] | None]], seed: int | None = None,
                       where: str = "augmentation") -> A.Compose:
    """An ``A.Compose`` from ``[{TransformName: {param: value}}, ...]``.

    Names are albumentations transforms (``HorizontalFlip``, ``HEStain``, ``HueSaturationValue``...)
    or ours (``MacenkoStainAugment``). Tuples may be written as YAML lists.
    """
    if not isinstance(steps, list):
        raise ConfigError(f"{where}: expected a list of transforms, got {type(steps).__name__}")
    transforms = []
    for step in steps:
        if not isinstance(step, dict) or len(step) != 1:
            raise ConfigError(f"{where}: each step is one mapping {{TransformName: {{params}}}}, got {step!r}")
        (name, params), = step.items()
        cls = _OURS.get(name) or getattr(A, name, None)
        if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
            raise ConfigError(f"{where}: unknown transform {name!r}; use an albumentations transform name "
                              "or MacenkoStainAugment")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (params or {}).items()}
        try:
            with warnings.catch_warnings():
                # albumentations only warns about a misspelt parameter; here it is an error.
                warnings.simplefilter("error", UserWarning)
                transforms.append(cls(**kwargs))
        except (TypeError, ValueError, UserWarning) as exc:
            raise ConfigError(f"{where}: {name}: {str(exc).splitlines()[0]}") from None
    pipeline = A.Compose(transforms)
    if seed is not None:
        reseed_augmentation(pipeline, seed)
    return pipeline


def reseed_augmentation(transform, seed: int) -> None:
    """Give an albumentations pipeline and each of its transforms its own stream from ``seed``.

    ``A.Compose(seed=...)`` hands every child the same seed, so e.g. a horizontal and a vertical
    flip with p=0.5 would always fire together; here each transform gets a distinct stream.
    """
    own, *children = np.random.SeedSequence(seed).spawn(1 + len(getattr(transform, "transforms", ()) or ()))
    value = int(own.generate_state(1)[0])
    transform.random_generator = np.random.default_rng(value)
    transform.py_random = random.Random(value)
    for child, child_seed in zip(getattr(transform, "transforms", ()) or (), children):
        reseed_augmentation(child, int(child_seed.generate_state(1)[0]))


def load_augmentation(path: str | Path, seed: int | None = None) -> A.Compose:
    """Build the pipeline described by a YAML file (top-level key ``augmentation``)."""
    import yaml

    path = locate_config(path, "augmentation", "augment")
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: augmentation config not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    steps = data.get("augmentation") if isinstance(data, dict) else None
    if steps is None:
        raise ConfigError(f"{path}: expected a top-level 'augmentation:' list")
    return build_augmentation(steps, seed=seed, where=str(path))


def augment_samples(image: np.ndarray, pipeline: A.Compose, n: int = 15) -> list[np.ndarray]:
    """``n`` augmented samples of ``image`` (uint8 RGB), drawn one after another from ``pipeline``."""
    return [pipeline(image=image)["image"] for _ in range(n)]


def preview_grid(image: np.ndarray, pipeline: A.Compose, n: int = 15, columns: int = 4) -> np.ndarray:
    """The original and ``n`` augmented samples of ``image`` (uint8 RGB) in a grid, original first.

    Returns
    -------
    numpy.ndarray
        ``(rows * H, columns * W, 3)`` uint8; unused cells are white.
    """
    samples = [image, *augment_samples(image, pipeline, n)]
    height, width = image.shape[:2]
    rows = -(-len(samples) // columns)
    grid = np.full((rows * height, columns * width, 3), 255, dtype=np.uint8)
    for k, sample in enumerate(samples):
        r, c = divmod(k, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = sample
    return grid
