"""Stain colour: Macenko and Reinhard normalisation (numpy on the CPU, torch on any device), their
CIELAB kernels, and H&E augmentation.
"""

from wsi_hcc.utils.lazy import lazy_exports

# each public name and the module that defines it, loaded on first use
_API = {
    "MacenkoStainAugment": "augment", "build_augmentation": "augment", "load_augmentation": "augment",
    "preview_grid": "augment", "augment_samples": "augment", "reseed_augmentation": "augment",
    "LabMoments": "cielab", "lab_moments": "cielab", "reinhard_to_srgb": "cielab", "srgb_to_lab": "cielab",
    "SRGB_TO_LINEAR": "cielab", "XYZ_FROM_RGB": "cielab", "RGB_FROM_XYZ": "cielab", "WHITE": "cielab",
    "T_KNEE": "cielab", "F_KNEE": "cielab", "SLOPE": "cielab", "GAMMA_KNEE": "cielab",
    "StainError": "common", "MIN_TISSUE_PIXELS": "common",
    "MacenkoNormalizer": "normalizers", "ReinhardNormalizer": "normalizers", "normalizer_from_dict": "normalizers",
    "check_rgb": "torch_normalizers", "macenko_fit": "torch_normalizers", "macenko_transform": "torch_normalizers",
    "reinhard_fit": "torch_normalizers", "reinhard_transform": "torch_normalizers",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
