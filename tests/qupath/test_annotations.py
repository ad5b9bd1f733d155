"""QuPath annotations to tile labels, on a hand-made GeoJSON with known overlaps."""

import gzip
import json

import numpy as np
import pytest

from wsi_hcc.errors import WsiHccError
from wsi_hcc.qupath.annotations import label_tiles, read_qupath_geojson


def _rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _feature(geometry, name=None):
    properties = {"objectType": "annotation"}
    if name:
        properties["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "geometry": geometry, "properties": properties}


FEATURES = [
    _feature({"type": "Polygon", "coordinates": [_rect(0, 0, 160, 200)]}, "Tumor"),
    # a second Tumor region inside the first: overlaps count once
    _feature({"type": "MultiPolygon", "coordinates": [[_rect(0, 0, 50, 50)], [_rect(60, 60, 90, 90)]]}, "Tumor"),
    # Normal with a hole inside the tile at (300, 0), filled by Necrosis
    _feature({"type": "Polygon", "coordinates": [_rect(160, 0, 400, 200), _rect(310, 10, 390, 90)[::-1]]}, "Normal"),
    _feature({"type": "Polygon", "coordinates": [_rect(310, 10, 390, 90)]}, "Necrosis"),
    _feature({"type": "Polygon", "coordinates": [_rect(0, 0, 400, 200)]}),  # unclassified
    _feature({"type": "Point", "coordinates": [10, 10]}, "Tumor"),
    # self-intersecting "bow tie", far from the tiles: repaired, not fatal
    _feature({"type": "Polygon", "coordinates": [[[1000, 1000], [1100, 1100], [1100, 1000], [1000, 1100],
                                                  [1000, 1000]]]}, "Normal"),
]
COORDS = np.array([[0, 0], [100, 0], [200, 0], [300, 0], [0, 100], [100, 100], [200, 100], [300, 100]])


@pytest.fixture
def geojson(tmp_path):
    path = tmp_path / "annotations.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": FEATURES}))
    return path


def test_tiles_take_the_class_covering_most_of_them(geojson):
    annotations = read_qupath_geojson(geojson)
    assert len(annotations) == 6  # the point is skipped, the bow tie repaired
    result = label_tiles(COORDS, 100, annotations, class_names=("Tumor", "Normal"))
    assert result.labels.tolist() == [0, 0, 1, -1, 0, 0, 1, 1]
    np.testing.assert_allclose(result.coverage[1], [0.6, 0.4], atol=1e-6)
    np.testing.assert_allclose(result.coverage[0], [1.0, 0.0], atol=1e-6)  # overlapping Tumor counted once
    np.testing.assert_allclose(result.coverage[3], [0.0, 0.36], atol=1e-6)  # Normal around its hole
    assert result.ignored_classes == ("Necrosis",) and result.n_unclassified == 1
    assert result.n_unlabelled == 1


def test_all_found_classes_and_coverage_threshold(geojson):
    annotations = read_qupath_geojson(geojson)
    everything = label_tiles(COORDS, 100, annotations)
    assert everything.class_names == ("Necrosis", "Normal", "Tumor")
    assert everything.labels[3] == 0  # Necrosis (0.64) fills the hole
    strict = label_tiles(COORDS, 100, annotations, class_names=("Tumor", "Normal"), min_coverage=0.7)
    assert strict.labels.tolist() == [0, -1, 1, -1, 0, -1, 1, 1]


def test_gzip_bare_list_and_origin_offset(tmp_path):
    path = tmp_path / "a.geojson.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(FEATURES[:1], fh)
    shifted = read_qupath_geojson(path, origin_xy=(1000, 500))
    assert shifted[0].geometry.bounds == (1000.0, 500.0, 1160.0, 700.0)
    labels = label_tiles(COORDS + [1000, 500], 100, shifted)
    assert labels.labels.tolist() == [0, 0, -1, -1, 0, 0, -1, -1]


@pytest.mark.parametrize("content", ["not json", json.dumps({"type": "Topology"})])
def test_bad_files_are_one_line(tmp_path, content):
    path = tmp_path / "bad.geojson"
    path.write_text(content)
    with pytest.raises(WsiHccError) as info:
        read_qupath_geojson(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(WsiHccError, match="not found"):
        read_qupath_geojson(tmp_path / "missing.geojson")
