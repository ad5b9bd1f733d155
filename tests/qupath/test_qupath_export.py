"""QuPath export: every file we write passes the spec's validator; regions are valid polygons; a
pathologist's corrections in QuPath come back as training labels."""

import copy
import gzip
import json
import uuid

import numpy as np
import pytest
import shapely
from qupath_validator import validate_document, validate_qupath_file

from wsi_hcc.qupath.annotations import label_tiles, read_qupath_geojson
from wsi_hcc.qupath.export import (
    QuPathExportError,
    probability_regions,
    region_features,
    slide_bounds_offset,
    tile_features,
    write_qupath_geojson,
)

TILE = 448
OFFSET = (1000, 2000)  # an MRXS-like slide whose QuPath origin is (bounds-x, bounds-y)
IMAGE_SIZE = (12 * TILE, 10 * TILE)  # what QuPath reports: the bounds' width and height

# p(HCC) on a 12 x 10 grid of tiles: a ring of high values with a low hole, one lone tile, and two
# tiles touching only at a corner (a classic source of invalid polygons).
P_GRID = np.zeros((10, 12))
P_GRID[1:6, 1:6] = 0.9
P_GRID[3, 3] = 0.1          # the hole
P_GRID[8, 10] = 0.8         # lone tile
P_GRID[7, 7] = P_GRID[8, 8] = 0.95  # diagonal neighbours
ROWS, COLS = np.nonzero(np.ones_like(P_GRID))
COORDS = np.c_[COLS * TILE + OFFSET[0], ROWS * TILE + OFFSET[1]]  # level-0 slide pixels
P = P_GRID[ROWS, COLS]


def _tiles(**overrides):
    attention = np.linspace(0.0, 1.0, len(P)) / len(P)
    arguments = dict(coords=COORDS, tile_size_level0=TILE,
                     measurements={"p_HCC": P, "attention": attention, "p_G1": P / 3, "p_G2": P / 3, "p_G3": P / 3},
                     class_names=("HCC", "Non-tumour"), class_index=(P < 0.5).astype(int), offset_xy=OFFSET)
    return tile_features(**(arguments | overrides))


def _assert_clean(path):
    """No finding at all: no ERROR, no LOSS, and not even a WARN (bounds, decimals, overlaps, ...)."""
    report = validate_qupath_file(path, image_size=IMAGE_SIZE)
    assert not report.findings, report.summary()


@pytest.mark.parametrize("name", ["tiles.geojson", "tiles.geojson.gz"])
def test_tile_file_passes_every_rule(tmp_path, name):
    path = write_qupath_geojson(tmp_path / name, _tiles())
    _assert_clean(path)
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode()
    assert "null" not in text and "NaN" not in text and ": " not in text
    assert not list(tmp_path.glob(".*partial"))
    assert path.read_bytes() == write_qupath_geojson(tmp_path / name, _tiles()).read_bytes()  # deterministic


def test_a_tile_is_its_square_in_qupath_pixels_with_measurements_and_class():
    feature = _tiles()[1 * 12 + 2]  # row 1, column 2: p = 0.9
    assert feature["geometry"] == {"type": "Polygon", "coordinates": [[[896, 448], [1344, 448], [1344, 896],
                                                                       [896, 896], [896, 448]]]}
    properties = feature["properties"]
    assert properties["objectType"] == "tile"
    assert properties["classification"] == {"name": "HCC", "color": [214, 39, 40]}
    assert properties["measurements"]["p_HCC"] == 0.9 and properties["measurements"]["p_G1"] == 0.3
    unclassified = tile_features(COORDS[:2], TILE, {"p_HCC": P[:2]})
    assert "classification" not in unclassified[0]["properties"]
    assert all(len(f["properties"]["measurements"]) == 1 for f in unclassified)


def test_fractional_tile_sizes_keep_two_decimals_and_shared_edges():
    features = tile_features(np.array([[0, 0], [447.123, 0]]), 447.123, {"p": np.array([0.1, 0.2])})
    first, second = (f["geometry"]["coordinates"][0] for f in features)
    assert first[1] == [447.12, 0] and second[0] == [447.12, 0]
    measurement = tile_features(np.array([[0, 0]]), 10, {"p": np.array([0.123456789])})[0]["properties"]["measurements"]
    assert measurement == {"p": 0.1234568}


@pytest.mark.parametrize("overrides, message", [
    ({"measurements": {"p_HCC": np.where(P > 0.85, np.nan, P)}}, "non-finite"),
    ({"measurements": {"Class probability": P}}, "Class probability"),
    ({"measurements": {"p_HCC": P[:5]}}, "5 values"),
    ({"class_names": ("HCC: G1", "Non-tumour")}, "derived class"),
    ({"class_names": ("HCC",)}, "class_index outside"),
    ({"class_colors": {"HCC": (300, 0, 0)}}, "0..255"),
])
def test_inputs_quPath_would_reject_raise_one_line(overrides, message):
    with pytest.raises(QuPathExportError, match=message) as info:
        _tiles(**overrides)
    assert "\n" not in str(info.value)


def test_writer_refuses_other_extensions_and_nan(tmp_path):
    with pytest.raises(QuPathExportError, match=".geojson"):
        write_qupath_geojson(tmp_path / "tiles.json.txt", [])
    broken = _tiles()[:1]
    broken[0]["properties"]["measurements"]["p_HCC"] = float("nan")
    with pytest.raises(QuPathExportError, match="NaN"):
        write_qupath_geojson(tmp_path / "tiles.geojson", broken)
    assert not (tmp_path / "tiles.geojson").exists()


def test_size_stays_under_the_budget_of_4_mb_per_50k_tiles(tmp_path):
    """Non-timed guard for the benchmark's size target: gzip bytes per tile < 4 MB / 50,000."""
    rng = np.random.default_rng(0)
    xs, ys = np.meshgrid(np.arange(100) * TILE, np.arange(50) * TILE)
    coords = np.c_[xs.ravel(), ys.ravel()]
    p = rng.random(len(coords))
    features = tile_features(coords, TILE, {"p_HCC": p, "attention": rng.random(len(p)) / len(p), "p_G1": p / 2,
                                            "p_G2": p / 3, "p_G3": p / 6}, ("HCC", "Non-tumour"), (p < 0.5).astype(int))
    path = write_qupath_geojson(tmp_path / "size.geojson.gz", features)
    assert path.stat().st_size / len(coords) < 4_000_000 / 50_000


def test_regions_are_valid_with_holes_lone_tiles_and_corner_touches():
    region = probability_regions(COORDS, P, TILE, 0.5)
    assert region.is_valid and region.geom_type == "MultiPolygon"
    assert region.area == pytest.approx((25 - 1 + 1 + 2) * TILE**2)
    ring_part = max(region.geoms, key=lambda g: g.area)
    assert len(ring_part.interiors) == 1 and shapely.Polygon(ring_part.interiors[0]).area == TILE**2
    assert probability_regions(COORDS, P, TILE, 0.99).is_empty
    assert probability_regions(COORDS, np.where(P > 0.5, np.nan, P), TILE, 0.5).is_empty


def test_overlapping_tiles_merge_into_one_valid_region():
    coords = np.array([[0, 0], [224, 0], [448, 224], [0, 1000]])
    region = probability_regions(coords, np.ones(4), 448, 0.5)
    assert region.is_valid and region.area == pytest.approx(448 * 672 + 448 * 448 - 224 * 224 + 448**2)


def test_region_file_passes_every_rule_and_is_offset(tmp_path):
    features = region_features(probability_regions(COORDS, P, TILE, 0.5), "HCC", offset_xy=OFFSET)
    assert len(features) == 4 and all(f["properties"]["objectType"] == "annotation" for f in features)
    xs = [x for f in features for ring in f["geometry"]["coordinates"] for x, _ in ring]
    assert min(xs) == TILE  # column 1, in QuPath's pixels
    _assert_clean(write_qupath_geojson(tmp_path / "regions.geojson", features))
    assert region_features(shapely.Polygon(), "HCC") == []


def test_invalid_input_geometry_is_repaired():
    bow_tie = shapely.Polygon([(0, 0), (100, 100), (100, 0), (0, 100), (0, 0)])
    features = region_features(bow_tie, "HCC")
    assert len(features) == 2
    assert validate_document({"type": "FeatureCollection", "features": features}).ok


def test_combined_file_tiles_and_regions(tmp_path):
    features = _tiles() + region_features(probability_regions(COORDS, P, TILE, 0.5), "HCC", offset_xy=OFFSET)
    _assert_clean(write_qupath_geojson(tmp_path / "slide.geojson.gz", features))


def test_bounds_offset_from_openslide_properties():
    assert slide_bounds_offset({"openslide.bounds-x": "1000", "openslide.bounds-y": "2000"}) == (1000, 2000)
    assert slide_bounds_offset({"openslide.vendor": "aperio"}) == (0, 0)
    with pytest.raises(QuPathExportError, match="bounds-x"):
        slide_bounds_offset({"openslide.bounds-x": "left"})


# --- the validator itself: each crafted mistake is caught by its rule -----------------------------

def _good():
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [10, 0], [10, 10], [0, 10],
                                                                                [0, 0]]]},
            "properties": {"objectType": "tile", "measurements": {"p": 0.5},
                           "classification": {"name": "HCC", "color": [200, 0, 0]}}}


def _with(path, value):
    feature = _good()
    *parents, last = path
    target = feature
    for key in parents:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return feature


BOW_TIE = [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]
BAD = {
    "A04": None,
    "A05": _with(["type"], "feature"),
    "B01": _with(["id"], None),
    "B02": _with(["id"], "tile-1"),
    "B04": _with(["geometry"], None),
    "B05": _with(["properties"], KeyError),
    "C01": _with(["geometry", "type"], "polygon"),
    "C02": _with(["geometry"], {"type": "GeometryCollection", "geometries": []}),
    "C03": _with(["geometry", "coordinates"], [[0, 0], [1, 1]]),
    "C04": _with(["geometry", "coordinates"], [[[0, 0], [10, "0"], [10, 10], [0, 0]]]),
    "C05": _with(["geometry", "coordinates"], [[[0, 0], [10, 0], [10, 10], [0, 10]]]),
    "C06": _with(["geometry", "coordinates"], [[[0, 0], [10, 0], [0, 0]]]),
    "C07": _with(["geometry", "coordinates"], BOW_TIE),
    "C08": _with(["geometry", "coordinates"], [[[0, 0], [10, 0], [20, 0], [0, 0]]]),
    "C09": _with(["geometry"], {"type": "LineString", "coordinates": [[0, 0]]}),
    "C13": _with(["geometry", "plane"], {"c": 0, "z": 0, "t": 0, "s": 1}),
    "D01": _with(["properties", "objectType"], None),
    "D02": _with(["properties", "objectType"], "Tile"),
    "D03": _with(["properties", "type"], "tile"),
    "D04": _with(["properties", "name"], 3),
    "D05": _with(["properties", "color"], "#ff0000"),
    "D06": _with(["properties", "classification"], {"name": "HCC"}),
    "D07": _with(["properties", "classification", "color"], [0.8, 0.1, 0.1]),
    "D08": _with(["properties", "classification", "name"], "HCC: G2"),
    "D10": _with(["properties", "measurements"], {"p": None}),
    "D14": _with(["properties", "metadata"], {"model": "x"}),
    "D15": _with(["properties", "childObjects"], {"type": "Feature"}),
    "B04-in-child": _with(["properties", "childObjects"], [_with(["geometry"], None)]),
}


@pytest.mark.parametrize("rule", sorted(BAD))
def test_validator_catches(rule):
    report = validate_document({"type": "FeatureCollection", "features": [BAD[rule]]})
    assert rule.split("-")[0] in report.rules() and not report.ok, report.summary()


def test_validator_file_rules(tmp_path):
    (tmp_path / "a.txt").write_text('{"type":"FeatureCollection","features":[]}')
    assert "A01" in validate_qupath_file(tmp_path / "a.txt").rules()
    (tmp_path / "b.geojson").write_text('{"type":"FeatureCollection","features":[' + json.dumps(_good())
                                        .replace("0.5", "NaN") + "]}")
    assert "A02" in validate_qupath_file(tmp_path / "b.geojson").rules()
    (tmp_path / "c.geojson").write_text(json.dumps([_good()]))
    assert "A03" in validate_qupath_file(tmp_path / "c.geojson").rules()
    twice = {"type": "FeatureCollection", "features": [_good(), _good()]}
    same_id = str(uuid.UUID(int=7))
    for feature in twice["features"]:
        feature["id"] = same_id
    assert "B03" in validate_document(twice).rules()
    overlapping = {"type": "FeatureCollection", "features": [_good(), _with(["geometry", "coordinates"],
                   [[[5, 5], [15, 5], [15, 15], [5, 15], [5, 5]]])]}
    assert "E04" in validate_document(overlapping).rules()


# --- round trip: our export, corrected in QuPath, back as training labels --------------------------

def _as_qupath_exports_it(feature, rng):
    """QuPath's own GeoJSON export (0.4-0.7): a UUID id, floats, isLocked on annotations."""
    exported = copy.deepcopy(feature)
    exported["id"] = str(uuid.UUID(int=int(rng.integers(0, 2**62)), version=4))
    for ring in _rings(exported["geometry"]):
        ring[:] = [[float(x), float(y)] for x, y in ring]
    if exported["properties"]["objectType"] == "annotation":
        exported["properties"]["isLocked"] = False
    return exported


def _rings(geometry):
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return [ring for polygon in polygons for ring in polygon]


def test_round_trip_pathologist_corrections_become_labels(tmp_path):
    ours = write_qupath_geojson(tmp_path / "slide.geojson.gz",
                                _tiles() + region_features(probability_regions(COORDS, P, TILE, 0.5), "HCC",
                                                           offset_xy=OFFSET))
    with gzip.open(ours, "rt") as fh:
        document = json.load(fh)

    # In QuPath the pathologist: reclassifies the lone tile's region as Non-tumour, deletes the
    # diagonal pair, extends the big region one tile column to the right (x 6..7 in tile units), and
    # draws a new HCC region over tile (10, 1). QuPath then exports every object with its own ids.
    rng = np.random.default_rng(1)
    tiles = [f for f in document["features"] if f["properties"]["objectType"] == "tile"]
    regions = [f for f in document["features"] if f["properties"]["objectType"] == "annotation"]
    lone = next(f for f in regions if shapely.geometry.shape(f["geometry"]).contains(
        shapely.Point(10.5 * TILE, 8.5 * TILE)))
    big = max(regions, key=lambda f: shapely.geometry.shape(f["geometry"]).area)
    assert len(regions) == 4  # the diagonal pair is two polygons; the pathologist deletes both
    lone["properties"]["classification"] = {"name": "Non-tumour", "color": [31, 119, 180]}
    extended = shapely.geometry.shape(big["geometry"]).union(shapely.box(6 * TILE, 1 * TILE, 7 * TILE, 6 * TILE))
    big["geometry"] = shapely.geometry.mapping(extended)
    big["geometry"] = {"type": "Polygon", "coordinates": [[list(p) for p in ring] for ring in
                                                          big["geometry"]["coordinates"]]}
    drawn = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[
        [10 * TILE + 0.5, 1 * TILE - 10.25], [11 * TILE + 10.75, 1 * TILE - 10.25], [11 * TILE + 10.75, 2 * TILE],
        [10 * TILE + 0.5, 2 * TILE], [10 * TILE + 0.5, 1 * TILE - 10.25]]]},
        "properties": {"objectType": "annotation", "classification": {"name": "HCC", "color": [214, 39, 40]}}}
    kept = [lone, big, drawn]
    exported = {"type": "FeatureCollection",
                "features": [_as_qupath_exports_it(f, rng) for f in tiles + kept]}
    corrected = tmp_path / "slide-corrected.geojson"
    corrected.write_text(json.dumps(exported))
    assert validate_qupath_file(corrected, image_size=IMAGE_SIZE).ok

    annotations = read_qupath_geojson(corrected, origin_xy=OFFSET)
    result = label_tiles(COORDS, TILE, annotations, class_names=("HCC", "Non-tumour"))
    labels = np.full(P_GRID.shape, -1)
    labels[ROWS, COLS] = result.labels
    expected = np.full(P_GRID.shape, -1)
    expected[1:6, 1:7] = 0      # the big region, extended by one column; its hole stays unlabelled
    expected[3, 3] = -1
    expected[8, 10] = 1         # reclassified lone tile
    expected[1, 10] = 0         # newly drawn region (covers the tile fully)
    np.testing.assert_array_equal(labels, expected)
