"""Tissue detection done with OpenCV and NumPy gives scikit-image's masks, threshold for threshold."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import filters, morphology

from wsi_hcc.slide.info import describe_slide
from wsi_hcc.slide.readers import open_slide
from wsi_hcc.slide.thumbnail import read_thumbnail
from wsi_hcc.tiling.tissue import TissueParams, closing, detect_tissue, otsu_threshold, remove_small_objects


def _scikit_image_tissue(thumbnail: np.ndarray, thumbnail_mpp: float, params: TissueParams) -> np.ndarray:
    """The recipe as scikit-image writes it (what detect_tissue did before it moved to OpenCV)."""
    red, green, blue = thumbnail[..., 0], thumbnail[..., 1], thumbnail[..., 2]
    value = np.maximum(np.maximum(red, green), blue).astype(np.float32) / 255.0
    low = np.minimum(np.minimum(red, green), blue).astype(np.float32) / 255.0
    saturation = np.where(value > 0, (value - low) / np.maximum(value, 1e-6), 0.0)
    threshold = max(float(filters.threshold_otsu(saturation)), params.min_saturation)
    mask = (saturation > threshold) & ~((value > params.max_value) & (saturation < 2 * threshold))
    px_per_um = 1.0 / thumbnail_mpp
    mask = morphology.closing(mask, morphology.disk(max(1, int(round(params.closing_um * px_per_um / 2)))))
    mask = morphology.remove_small_objects(mask, max_size=max(1, int(params.min_object_um2 * px_per_um**2)))
    return morphology.remove_small_holes(mask, max_size=max(1, int(params.min_hole_um2 * px_per_um**2)))


def _thumbnail(path, mpp: float = 8.0):
    reader = open_slide(path)
    slide_mpp = describe_slide(reader).slide_mpp
    thumbnail, downsample = read_thumbnail(reader, slide_mpp, mpp)
    return thumbnail, slide_mpp * downsample


@pytest.mark.parametrize("slide", ["real_svs", "synth_slide"])
@pytest.mark.parametrize("mpp", [2.0, 8.0])
def test_masks_equal_scikit_image_on_slides(request, slide, mpp):
    thumbnail, thumbnail_mpp = _thumbnail(request.getfixturevalue(slide), mpp)
    params = TissueParams(thumbnail_mpp=mpp)
    mask = detect_tissue(thumbnail, thumbnail_mpp, params)
    expected = _scikit_image_tissue(thumbnail, thumbnail_mpp, params)
    assert 0.05 < mask.mean() < 0.98  # a real mask: tissue and glass both present
    np.testing.assert_array_equal(mask, expected)


def test_otsu_equals_scikit_image():
    rng = np.random.default_rng(0)
    samples = [rng.random((50, 70)), rng.beta(0.5, 3, (80, 40)).astype(np.float32),
               np.concatenate([rng.normal(0.1, 0.02, 500), rng.normal(0.6, 0.1, 300)]), rng.integers(0, 9, 400) / 8]
    for values in samples:
        assert otsu_threshold(values) == pytest.approx(float(filters.threshold_otsu(values)), abs=0)


@pytest.mark.parametrize("density", [0.3, 0.55, 0.8])
def test_closing_and_small_object_removal_equal_scikit_image(density):
    mask = np.random.default_rng(int(density * 10)).random((120, 170)) < density
    for radius in (1, 2, 4):
        np.testing.assert_array_equal(closing(mask, radius), morphology.closing(mask, morphology.disk(radius)))
    for size in (1, 5, 40):
        np.testing.assert_array_equal(remove_small_objects(mask, size),
                                      morphology.remove_small_objects(mask, max_size=size))
        np.testing.assert_array_equal(~remove_small_objects(~mask, size),
                                      morphology.remove_small_holes(mask, max_size=size))


def test_tissue_touching_the_border_is_not_eroded_by_closing():
    mask = np.zeros((40, 40), dtype=bool)
    mask[:, :15] = True  # tissue running off the left edge
    assert np.array_equal(closing(mask, 3), mask)
