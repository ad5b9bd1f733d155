"""The tile under a point, and the Deep Zoom pyramid's geometry and band reads."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_hcc.records import TileSpec
from wsi_hcc.view.pyramid import DeepZoomGrid, DeepZoomPyramid
from wsi_hcc.view.tile_index import TileIndex


def _painted_reference(boxes: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    out = np.full((len(ys), len(xs)), -1)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        out[np.ix_((ys >= y0) & (ys < y1), (xs >= x0) & (xs < x1))] = i
    return out


def test_lattice_lookup_matches_painting_box_by_box_at_a_fractional_tile_size():
    spec = TileSpec(tile_px=32, target_mpp=1.0, level=0, level_downsample=1.0, scale=1 / 0.499,
                    tile_size_level0=32 / 0.499, stride_level0=32 / 0.499, overlap_px=0)
    lines = np.array([(c, r) for r in range(6) for c in range(8) if (c + r) % 3])
    boxes = spec.tile_boxes(np.rint(lines * spec.stride_level0))
    index = TileIndex(boxes)
    assert index._lattice is not None
    xs, ys = np.arange(-3, 560, 0.7), np.arange(-3, 400, 1.3)
    assert np.array_equal(index.index_image(xs, ys), _painted_reference(boxes, xs, ys))
    assert index.at(*boxes[5, :2]) == 5 and index.at(boxes[5, 2] - 0.01, boxes[5, 3] - 0.01) == 5
    assert index.at(-1, 0) == -1


def test_overlapping_tiles_fall_back_to_painting_with_the_later_tile_on_top():
    boxes = np.array([[0, 0, 100, 100], [50, 50, 150, 150], [200, 0, 300, 100]], dtype=float)
    index = TileIndex(boxes)
    assert index._lattice is None
    xs, ys = np.arange(0.5, 320, 5.0), np.arange(0.5, 160, 5.0)
    assert np.array_equal(index.index_image(xs, ys), _painted_reference(boxes, xs, ys))
    assert (index.at(75, 75), index.at(25, 25), index.at(160, 160)) == (1, 0, -1)


def test_deep_zoom_geometry():
    grid = DeepZoomGrid(3000, 1000, 256)
    assert grid.level_count == 13 and grid.level_size(12) == (3000, 1000) and grid.level_size(11) == (1500, 500)
    assert grid.level_size(0) == (1, 1) and grid.tile_count(12) == (12, 4)
    assert grid.tile_box(12, 11, 3) == (2816, 768, 184, 232)
    with pytest.raises(ValueError, match="outside"):
        grid.tile_box(12, 12, 0)


class _OneLevelReader:
    """A slide without a pyramid (100k x 80k): records the size of every read."""

    backend, path = "fake", "fake.tif"
    dimensions = (100_000, 80_000)
    level_dimensions = (dimensions,)
    level_downsamples = (1.0,)

    def __init__(self):
        self.reads = []

    def read_region(self, location, level, size):
        self.reads.append(size)
        return np.full((size[1], size[0], 3), 200, dtype=np.uint8)


def test_a_coarse_tile_of_a_slide_without_pyramid_is_read_in_bounded_bands():
    reader = _OneLevelReader()
    pyramid = DeepZoomPyramid(reader)
    level = pyramid.grid.level_count - 1 - 6  # 1/64: a tile covers 16384 level-0 px
    tile = pyramid.tile(level, 0, 0)
    assert tile.shape == (256, 256, 3) and (tile == 200).all()
    assert len(reader.reads) > 1 and max(w * h * 3 for w, h in reader.reads) <= 64 * 2**20 + 16384 * 3 * 64
    assert sum(h for _, h in reader.reads) == 16384 and {w for w, _ in reader.reads} == {16384}
