"""Peritumoral rings in mm (spheres against the analytic shell), sweeps, clipping, region features, habitats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_hcc.radiology import (
    first_order_features,
    glcm_features,
    habitats,
    peritumoral_ring,
    region_features,
    ring_sweep,
    signed_distance_mm,
)
from wsi_hcc.radiology.ring import mask_volume_ml

RADIOLOGY = Path(__file__).resolve().parents[3] / "shared" / "data" / "radiology"


def _sphere(spacing_mm, radius_mm, margin_mm=10.0, offset=(0.3, 0.1, 0.2)):
    spacing = np.asarray(spacing_mm, float)
    shape = np.ceil(2 * (radius_mm + margin_mm) / spacing).astype(int) + 1
    # Off-grid centre, so the test does not ride on a lucky symmetry.
    centre = (shape - 1) / 2 * spacing + np.asarray(offset) * spacing
    axes = [np.arange(n) * s - c for n, s, c in zip(shape, spacing, centre)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return zz ** 2 + yy ** 2 + xx ** 2 <= radius_mm ** 2


def _shell_ml(radius_mm, width_mm):
    return 4 / 3 * np.pi * ((radius_mm + width_mm) ** 3 - radius_mm ** 3) / 1000


@pytest.mark.parametrize("spacing_mm", [(1.0, 1.0, 1.0), (5.0, 0.7, 0.7), (3.0, 3.0, 3.0), (2.5, 0.8, 0.8)])
@pytest.mark.parametrize("radius_mm", [10.0, 15.0])
def test_ring_matches_the_analytic_shell(spacing_mm, radius_mm):
    tumour = _sphere(spacing_mm, radius_mm)
    ring = peritumoral_ring(tumour, spacing_mm, outer_mm=6.0)
    assert not (ring & tumour).any()
    error = mask_volume_ml(ring, spacing_mm) / _shell_ml(radius_mm, 6.0) - 1
    assert abs(error) < 0.08, error


def test_a_ring_counted_in_voxels_is_far_off_on_anisotropic_spacing():
    spacing = (5.0, 0.7, 0.7)
    tumour = _sphere(spacing, 12.0, margin_mm=45.0)
    analytic = _shell_ml(12.0, 6.0)
    in_mm = mask_volume_ml(peritumoral_ring(tumour, spacing, 6.0), spacing) / analytic - 1
    in_voxels = mask_volume_ml(peritumoral_ring(tumour, (1.0, 1.0, 1.0), 6.0), spacing) / analytic - 1
    assert abs(in_mm) < 0.08 and abs(in_voxels) > 0.5


def test_centre_distances_alone_would_thin_the_ring():
    # What the half-voxel correction buys: plain edt distances lose >10 % on 5 mm slices.
    from scipy.ndimage import distance_transform_edt

    spacing = (5.0, 0.7, 0.7)
    tumour = _sphere(spacing, 10.0)
    plain = (distance_transform_edt(~tumour, sampling=spacing) <= 6.0) & ~tumour
    assert mask_volume_ml(plain, spacing) / _shell_ml(10.0, 6.0) < 0.9


def test_inner_bound_sweep_and_clipping():
    spacing = (2.0, 1.0, 1.0)
    tumour = _sphere(spacing, 12.0)
    rings = ring_sweep(tumour, spacing, widths_mm=(2, 4, 6, 8, 10))
    volumes = [mask_volume_ml(rings[w], spacing) for w in (2.0, 4.0, 6.0, 8.0, 10.0)]
    assert all(a < b for a, b in zip(volumes, volumes[1:]))
    assert np.array_equal(rings[6.0], peritumoral_ring(tumour, spacing, 6.0))
    for width in (2.0, 10.0):
        assert abs(volumes[[2, 4, 6, 8, 10].index(width)] / _shell_ml(12.0, width) - 1) < 0.1
    bands = ring_sweep(tumour, spacing, widths_mm=(2, 4, 6), nested=False)
    assert not (bands[2.0] & bands[4.0]).any()
    assert np.array_equal(bands[2.0] | bands[4.0] | bands[6.0], rings[6.0])
    outer = peritumoral_ring(tumour, spacing, outer_mm=6.0, inner_mm=2.0)
    assert np.array_equal(outer, rings[6.0] & ~rings[2.0])
    margin = peritumoral_ring(tumour, spacing, outer_mm=3.0, inner_mm=-3.0)
    assert (margin & tumour).any() and (margin & ~tumour).any()
    # Clipped to a "liver" that ends at a plane through the tumour.
    liver = np.zeros_like(tumour)
    liver[:, :, : tumour.shape[2] // 2] = True
    clipped = peritumoral_ring(tumour, spacing, 6.0, within=liver)
    assert np.array_equal(clipped, rings[6.0] & liver)
    assert not peritumoral_ring(np.zeros_like(tumour), spacing).any()
    with pytest.raises(ValueError):
        peritumoral_ring(tumour, spacing, outer_mm=2.0, inner_mm=3.0)


def test_signed_distance_is_symmetric_about_the_surface():
    spacing = (1.0, 1.0, 1.0)
    tumour = _sphere(spacing, 10.0, offset=(0, 0, 0))
    distance = signed_distance_mm(tumour, spacing)
    centre = tuple(n // 2 for n in tumour.shape)
    assert distance[centre] == pytest.approx(-10.0, abs=0.7)
    assert distance[centre[0], centre[1], centre[2] + 15] == pytest.approx(5.0, abs=0.7)
    cropped = signed_distance_mm(tumour, spacing, max_mm=3.0)
    near = np.isfinite(cropped)
    assert np.allclose(cropped[near], distance[near]) and np.all(distance[~near] > 3.0)


def test_ring_on_a_synthetic_lesion_in_the_real_liver():
    from wsi_hcc.radiology import load_volume

    path = RADIOLOGY / "nifti_totalseg" / "example_seg.nii.gz"
    if not path.exists():
        pytest.skip(f"real radiology data not found at {path}")
    seg = load_volume(path)
    liver = seg.array == 5
    # A 9 mm lesion near the liver's edge: the ring must be clipped where the liver ends.
    from scipy.ndimage import distance_transform_edt

    depth = distance_transform_edt(liver, sampling=seg.spacing_mm)
    centre = np.argwhere((depth > 10) & (depth < 13))[0]
    grid = np.indices(liver.shape).transpose(1, 2, 3, 0) * np.asarray(seg.spacing_mm)
    tumour = np.linalg.norm(grid - centre * np.asarray(seg.spacing_mm), axis=-1) <= 9.0
    ring = peritumoral_ring(tumour, seg.spacing_mm, 6.0, within=liver)
    unclipped = peritumoral_ring(tumour, seg.spacing_mm, 6.0)
    assert ring.sum() < unclipped.sum() and not (ring & ~liver).any()


def test_first_order_and_glcm_features():
    rng = np.random.default_rng(0)
    values = rng.normal(100, 20, 20000)
    stats = first_order_features(values, voxel_volume_ml=0.001)
    assert stats["mean"] == pytest.approx(100, abs=0.5) and stats["sd"] == pytest.approx(20, abs=0.5)
    assert abs(stats["skewness"]) < 0.1 and abs(stats["kurtosis"]) < 0.1 and stats["volume_ml"] == pytest.approx(20)
    assert np.isnan(first_order_features(np.array([]))["mean"])
    mask = np.zeros((6, 40, 40), bool)
    mask[1:5, 5:35, 5:35] = True
    smooth = np.full(mask.shape, 100.0)
    smooth[:, :, 20:] = 200.0
    rough = smooth.copy()
    rough[:, ::2, :] += 150.0
    flat, textured = glcm_features(smooth, mask), glcm_features(rough, mask)
    assert textured["contrast"] > 10 * flat["contrast"] and textured["homogeneity"] < flat["homogeneity"]
    # Values outside the mask must not leak into the texture.
    leaky = smooth.copy()
    leaky[~mask] = 3000.0
    assert glcm_features(leaky, mask) == pytest.approx(flat, nan_ok=True)


def test_habitats_recover_two_enhancement_patterns():
    rng = np.random.default_rng(1)
    mask = np.zeros((8, 30, 30), bool)
    mask[1:7, 3:27, 3:27] = True
    truth = np.zeros(mask.shape, np.uint8)
    truth[:, :, :15] = 1
    truth[:, :, 15:] = 2
    arterial = np.where(truth == 1, 150.0, 60.0) + rng.normal(0, 8, mask.shape)
    portal = np.where(truth == 1, 80.0, 110.0) + rng.normal(0, 8, mask.shape)
    labels, summary = habitats({"arterial": arterial, "portal": portal}, mask, n_habitats=2, order_by="arterial")
    assert not labels[~mask].any()
    # Habitat 2 is the brighter arterial one: the enhancing half.
    agreement = (labels[mask] == np.where(truth[mask] == 1, 2, 1)).mean()
    assert agreement > 0.99
    assert summary[1]["mean"]["arterial"] > summary[0]["mean"]["arterial"]
    assert sum(h["fraction"] for h in summary) == pytest.approx(1.0)
    features = region_features({"arterial": arterial}, {"tumour": mask}, (2.0, 1.0, 1.0))
    assert features["tumour"]["volume_ml"] == pytest.approx(mask.sum() * 0.002)
    assert set(features["tumour"]["arterial"]) == {"first_order", "glcm"}
