"""Versions of the stack, recorded in every output and printed by ``wsi-hcc --version``."""

from __future__ import annotations

import platform
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

__all__ = ["stack_versions", "utc_now"]

_PACKAGES = ("wsi-hcc", "numpy", "zarr", "numcodecs", "imagecodecs", "tifffile", "tiffslide",
             "openslide-python", "openslide-bin", "scikit-image", "Pillow", "dask", "distributed", "h5py",
             "torch", "torchvision", "timm", "safetensors", "scikit-learn", "albumentations", "matplotlib",
             "pydantic", "monai", "SimpleITK", "nibabel", "pydicom", "lifelines", "torchsurv", "pandas",
             "opencv-python-headless", "numba")


@lru_cache(maxsize=1)
def stack_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def utc_now() -> str:
    """The current time as outputs record it: UTC, ISO 8601, to the second."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")
