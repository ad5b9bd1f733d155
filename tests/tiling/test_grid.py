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


# Real scanners' mpp against common targets: 32 px at 1 um/px on the 0.499 um/px Aperio slide spans
# 64.13 level-0 px; 224 px at 0.5 um/px on a 0.2527 um/px slide 443.2 px; with overlap 32 px.
NON_ROUND = [(0.499, 1.0, 32, 0), (0.2527, 0.5, 224, 0), (0.2428, 0.5, 256, 0), (0.2527, 0.5, 224, 32)]


@pytest.mark.parametrize("slide_mpp,target_mpp,tile_px,overlap_px", NON_ROUND)
def test_tile_boxes_are_the_exact_extent_snapped_so_neighbours_share_edges(slide_mpp, target_mpp, tile_px,
                                                                           overlap_px):
    spec = plan_tile_spec((1.0,), slide_mpp, target_mpp, tile_px, overlap_px)
    grid = make_grid((30_000, 20_000), spec)
    boxes = spec.tile_boxes(grid.coords)
    assert boxes.shape == (len(grid), 4) and spec.tile_size_level0 % 1 != 0
    np.testing.assert_array_equal(boxes[:, :2], grid.coords)  # a box starts at its stored corner
    exact = np.c_[grid.cols, grid.rows] * spec.stride_level0
    assert np.abs(boxes - np.c_[exact, exact + spec.tile_size_level0]).max() <= 0.5
    n_cols, _ = grid.shape
    right = grid.cols < n_cols - 1  # every tile with a right neighbour, which is the next tile
    below = grid.rows < grid.rows.max()
    if overlap_px == 0:
        np.testing.assert_array_equal(boxes[right, 2], boxes[np.flatnonzero(right) + 1, 0])
        np.testing.assert_array_equal(boxes[below, 3], boxes[np.flatnonzero(below) + n_cols, 1])
    else:  # neighbours overlap by the overlap, within the half-pixel rounding of each edge
        overlap_level0 = overlap_px * spec.scale
        assert np.abs(boxes[right, 2] - boxes[np.flatnonzero(right) + 1, 0] - overlap_level0).max() <= 1.0


def test_coords_off_the_grid_keep_squares_of_the_tile_size():
    spec = plan_tile_spec((1.0,), 0.2527, 0.5, 224)
    coords = np.array([[100, 37], [543, 37]])  # from another tool's coords file: not on our grid
    np.testing.assert_allclose(spec.tile_boxes(coords), np.c_[coords, coords + spec.tile_size_level0])
    assert spec.tile_boxes(np.zeros((0, 2))).shape == (0, 4)
