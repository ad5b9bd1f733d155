import numpy as np
import pytest

from wsi_hcc.errors import WsiHccError
from wsi_hcc.tiling.grid import make_grid, plan_tile_spec, tissue_fractions


def test_native_within_one_percent_reads_without_resampling():
    spec = plan_tile_spec((1.0, 4.0, 16.0), slide_mpp=0.499, target_mpp=0.5, tile_px=256)
    assert spec.level == 0 and spec.native and spec.scale == 1.0
    assert spec.tile_size_level0 == 256


def test_coarsest_level_at_or_finer_than_target_is_used():
    spec = plan_tile_spec((1.0, 4.0, 16.0), slide_mpp=0.25, target_mpp=2.0, tile_px=256)
    assert spec.level == 1  # level 1 is 1.0 um/px, level 2 (4.0) is coarser than the target
    assert spec.scale == pytest.approx(2.0)
    # a tile covers exactly tile_px * target_mpp microns
    assert spec.tile_size_level0 * 0.25 == pytest.approx(256 * 2.0)


def test_level_within_tolerance_is_native_at_that_level():
    spec = plan_tile_spec((1.0, 4.0002), slide_mpp=0.25, target_mpp=1.0, tile_px=224)
    assert spec.level == 1 and spec.native


def test_fractional_scale_keeps_physical_size_exact():
    spec = plan_tile_spec((1.0,), slide_mpp=0.2527, target_mpp=0.5, tile_px=224, overlap_px=32)
    assert not spec.native
    assert spec.tile_size_level0 * 0.2527 == pytest.approx(224 * 0.5)
    assert spec.stride_level0 * 0.2527 == pytest.approx(192 * 0.5)


def test_upsampling_is_refused_with_the_fix():
    with pytest.raises(WsiHccError, match="--mpp 0.5"):
        plan_tile_spec((1.0,), slide_mpp=0.5, target_mpp=0.25, tile_px=256)


@pytest.mark.parametrize("tile_px,overlap_px", [(256, 256), (256, -1), (4, 0)])
def test_bad_tile_geometry_is_rejected(tile_px, overlap_px):
    with pytest.raises(WsiHccError):
        plan_tile_spec((1.0,), slide_mpp=0.5, target_mpp=0.5, tile_px=tile_px, overlap_px=overlap_px)


def test_grid_covers_only_whole_tiles_row_major():
    spec = plan_tile_spec((1.0,), slide_mpp=0.5, target_mpp=0.5, tile_px=100)
    grid = make_grid((350, 200), spec)
    assert grid.shape == (3, 2) and len(grid) == 6
    assert grid.coords.tolist() == [[0, 0], [100, 0], [200, 0], [0, 100], [100, 100], [200, 100]]
    assert grid.coords.dtype == np.int64


def test_grid_exact_fit_and_overlap():
    spec = plan_tile_spec((1.0,), slide_mpp=0.5, target_mpp=0.5, tile_px=100, overlap_px=50)
    grid = make_grid((300, 100), spec)
    assert grid.coords[:, 0].tolist() == [0, 50, 100, 150, 200]


def test_grid_smaller_than_a_tile_is_empty():
    spec = plan_tile_spec((1.0,), slide_mpp=0.5, target_mpp=0.5, tile_px=256)
    assert len(make_grid((255, 1000), spec)) == 0


def test_resampled_grid_origins_in_level0():
    spec = plan_tile_spec((1.0, 4.0), slide_mpp=0.25, target_mpp=0.5, tile_px=256)
    grid = make_grid((2048, 1024), spec)
    assert spec.level == 0 and spec.scale == 2.0
    assert grid.shape == (4, 2)
    assert grid.coords[1].tolist() == [512, 0]


def test_tissue_fractions_from_mask():
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, :5] = True  # left half is tissue
    coords = np.array([[0, 0], [40, 0], [80, 0], [20, 40]])
    fractions = tissue_fractions(mask, (10.0, 10.0), coords, tile_size_level0=20)
    assert fractions.dtype == np.float32
    assert fractions.tolist() == [1.0, 0.5, 0.0, 1.0]
    assert tissue_fractions(mask, (10.0, 10.0), np.zeros((0, 2)), 20).shape == (0,)


@pytest.mark.parametrize("factor, shape", [(2, (64, 48)), (2, (63, 47)), (3, (64, 48)), (4, (64, 64))])
def test_reduce_by_is_pillows_reduce(factor, shape):
    """The fast 2x path must give Pillow's pixels exactly, ragged edges included."""
    from PIL import Image

    from wsi_hcc.slide.thumbnail import reduce_by

    image = np.random.default_rng(factor).integers(0, 256, (*shape, 3), dtype=np.uint8)
    np.testing.assert_array_equal(reduce_by(image, factor), np.asarray(Image.fromarray(image).reduce(factor)))
