"""Exports at any mpp: tiles drawn at their exact extent, so a class region is one polygon per
edge-connected group of its tiles and heatmaps have no seams, on grids whose tiles span a
fractional number of level-0 pixels (real scanners: 0.499, 0.2527, 0.2428 um/px)."""

import gzip
import json

import numpy as np
import pytest
from qupath_validator import validate_document, validate_qupath_file
from scipy import ndimage

from wsi_hcc.qupath.export import probability_regions, region_features, tile_features
from wsi_hcc.tiling.grid import make_grid, plan_tile_spec
from wsi_hcc.viz.heatmap import value_grid
from wsi_hcc.viz.slide_exports import TilePredictions, slide_geojson_features, slide_heatmap_png

GRIDS = [(0.499, 1.0, 32), (0.2527, 0.5, 224), (0.2428, 0.5, 256), (0.25, 0.5, 224)]
FOUR_CONNECTED = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def _grid(slide_mpp, target_mpp, tile_px, tiles_wide=40, tiles_high=30):
    spec = plan_tile_spec((1.0,), slide_mpp, target_mpp, tile_px)
    size = (int(tiles_wide * spec.tile_size_level0) + 1, int(tiles_high * spec.tile_size_level0) + 1)
    grid = make_grid(size, spec)
    assert grid.shape == (tiles_wide, tiles_high)
    return spec, grid


def _blobs(shape_rc, seed):
    """A random pattern of tile groups: blobs, holes, single tiles and tiles touching at corners."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.random(shape_rc), 1.2)
    return smooth > np.quantile(smooth, 0.6)


def _polygons(features):
    return [f for f in features if f["properties"]["objectType"] == "annotation"]


@pytest.mark.parametrize("slide_mpp,target_mpp,tile_px", GRIDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_region_polygon_per_edge_connected_group_of_tiles(slide_mpp, target_mpp, tile_px, seed):
    spec, grid = _grid(slide_mpp, target_mpp, tile_px)
    positive = _blobs(grid.shape[::-1], seed)
    values = positive[grid.rows, grid.cols].astype(float)
    _, n_groups = ndimage.label(positive, structure=FOUR_CONNECTED)
    assert n_groups > 5

    boxes = spec.tile_boxes(grid.coords)
    regions = probability_regions(boxes, values, None, 0.5)
    polygons = _polygons(region_features(regions, "HCC"))
    assert len(polygons) == n_groups
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    assert regions.area == pytest.approx(areas[values > 0].sum())  # the union covers its tiles, and only them
    assert validate_document({"type": "FeatureCollection", "features": polygons}).ok


@pytest.mark.parametrize("slide_mpp,target_mpp,tile_px", GRIDS[:3])
def test_squares_at_the_rounded_corners_would_split_the_regions(slide_mpp, target_mpp, tile_px):
    """Why the boxes are needed: the stored corners are whole pixels, the tile is not."""
    spec, grid = _grid(slide_mpp, target_mpp, tile_px)
    values = np.ones(len(grid))
    from_corners = probability_regions(grid.coords, values, spec.tile_size_level0, 0.5)
    from_boxes = probability_regions(spec.tile_boxes(grid.coords), values, None, 0.5)
    assert len(_polygons(region_features(from_corners, "HCC"))) > 1
    assert len(_polygons(region_features(from_boxes, "HCC"))) == 1 and not list(from_boxes.interiors)


@pytest.mark.parametrize("slide_mpp,target_mpp,tile_px", GRIDS)
def test_tiles_share_edges_without_overlap_or_gap(slide_mpp, target_mpp, tile_px):
    spec, grid = _grid(slide_mpp, target_mpp, tile_px, 12, 9)
    features = tile_features(spec.tile_boxes(grid.coords), None, {"p_HCC": np.linspace(0, 1, len(grid))})
    report = validate_document({"type": "FeatureCollection", "features": features})
    assert report.ok and not report.of("WARN"), report.summary()  # E04: no two tiles overlap
    rings = np.array([f["geometry"]["coordinates"][0] for f in features])
    assert rings.dtype.kind == "i"  # whole pixels: QuPath's preferred tile geometry (spec C11)
    area = sum((r[2, 0] - r[0, 0]) * (r[2, 1] - r[0, 1]) for r in rings)
    x0, y0, x1, y1 = rings[:, :, 0].min(), rings[:, :, 1].min(), rings[:, :, 0].max(), rings[:, :, 1].max()
    assert area == (x1 - x0) * (y1 - y0)  # the tiles tile their bounding box: no gap, no overlap


@pytest.mark.parametrize("slide_mpp,target_mpp,tile_px", GRIDS)
@pytest.mark.parametrize("downsample", [3.7, 16.0, 61.3])
def test_heatmap_raster_has_no_seams(slide_mpp, target_mpp, tile_px, downsample):
    spec, grid = _grid(slide_mpp, target_mpp, tile_px, 12, 9)
    values = np.random.default_rng(0).random(len(grid))
    boxes = spec.tile_boxes(grid.coords)
    height, width = (int(np.ceil(boxes[:, 3].max() / downsample)) + 2, int(np.ceil(boxes[:, 2].max() / downsample)) + 2)
    raster = value_grid(boxes, values, None, downsample, (height, width))
    covered = np.isfinite(raster)
    inside = np.zeros_like(covered)
    inside[:int(round(boxes[:, 3].max() / downsample)), :int(round(boxes[:, 2].max() / downsample))] = True
    assert covered[inside].all() and not covered[~inside].any()  # no seam inside, nothing outside
    assert np.isin(raster[covered], values.astype(np.float32)).all()  # one tile per pixel, never a mean of two


def test_slide_exports_draw_the_boxes_they_are_given():
    spec, grid = _grid(0.499, 1.0, 32, 10, 8)
    boxes = spec.tile_boxes(grid.coords)
    p = (grid.cols < 5).astype(float)  # the left half: one group
    tiles = TilePredictions(boxes, p, np.full(len(grid), 1 / len(grid)))
    features = slide_geojson_features(tiles, ["Non-tumour", "HCC"], None, 0.5)
    assert len(_polygons(features)) == 1
    assert features[0]["geometry"]["coordinates"][0][2] == boxes[0, 2:].astype(int).tolist()
    thumbnail = np.full((int(boxes[:, 3].max() // 4), int(boxes[:, 2].max() // 4), 3), 230, np.uint8)
    assert slide_heatmap_png(thumbnail, 4.0, tiles, "HCC").startswith(b"\x89PNG")


def _groups(coords, stride_level0, positive):
    """Edge-connected groups (4-connectivity) of the positive tiles on the tile grid."""
    cols, rows = np.rint(np.asarray(coords) / stride_level0).astype(int).T
    mask = np.zeros((rows.max() + 1, cols.max() + 1), dtype=bool)
    mask[rows[positive], cols[positive]] = True
    return ndimage.label(mask, structure=FOUR_CONNECTED)[1]


def test_real_slide_regions_match_the_connected_tile_groups(real_svs, tmp_path):
    """The real Aperio slide (0.499 um/px) tiled as the demo bundle tiles (32 px at 1 um/px: 64.13
    level-0 px a tile), scored by how dark each tile is, exported and checked as classify does."""
    from wsi_hcc.qupath.export import write_qupath_geojson
    from wsi_hcc.store.patch_store import TileReader, open_store
    from wsi_hcc.tiling.config import TileConfig
    from wsi_hcc.tiling.slide_tiler import tile_slide

    result = tile_slide(real_svs, tmp_path, TileConfig(target_mpp=1.0, tile_px=32, qc=False))
    spec = result.spec
    assert spec.tile_size_level0 == pytest.approx(64.128, abs=1e-3)
    coords = open_store(result.store_path)["coords"][:]
    reader = TileReader(result.store_path)
    darkness = np.array([255 - reader[i].mean() for i in range(len(reader))]) / 255
    threshold = float(np.median(darkness))
    tiles = TilePredictions(spec.tile_boxes(coords), darkness, np.full(len(coords), 1 / len(coords)))
    path = write_qupath_geojson(tmp_path / "slide.geojson.gz",
                                slide_geojson_features(tiles, ["Non-tumour", "HCC"], None, threshold))

    report = validate_qupath_file(path, image_size=result.slide.dimensions)
    assert report.ok and not report.of("WARN"), report.summary()
    features = json.loads(gzip.decompress(path.read_bytes()))["features"]
    n_groups = _groups(coords, spec.stride_level0, darkness >= threshold)
    assert n_groups >= 3 and len(_polygons(features)) == n_groups
    # what the export did before: squares at the rounded corners fall apart into more pieces
    assert len(_polygons(region_features(probability_regions(coords, darkness, spec.tile_size_level0, threshold),
                                         "HCC"))) > n_groups
