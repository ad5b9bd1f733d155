"""A patch classifier's exports: a panel per class and the top class; QuPath tiles with every
class probability and one region per connected group of tiles where a class is on top."""

import numpy as np
import pytest
from qupath_validator import validate_document

from wsi_hcc.viz.slide_exports import class_colours, class_geojson_features, class_maps_png, measurement_name


def _grid(n=4, size=50.0):
    ys, xs = np.divmod(np.arange(n * n), n)
    return np.stack([xs * size, ys * size, xs * size + size, ys * size + size], axis=1).astype(float)


def test_class_geojson_has_every_probability_and_regions_per_connected_group():
    boxes = _grid()
    top = np.array([0, 0, 1, 1,
                    0, 0, 1, 1,
                    2, 2, 2, 2,
                    1, 0, 0, 2])
    probs = np.full((16, 3), 0.1)
    probs[np.arange(16), top] = 0.8
    features = class_geojson_features(boxes, probs, ["high grade", "low grade", "non-cancerous"])
    tiles = [f for f in features if f["properties"]["objectType"] == "tile"]
    regions = [f for f in features if f["properties"]["objectType"] == "annotation"]
    assert len(tiles) == 16
    assert set(tiles[0]["properties"]["measurements"]) == {"p_high_grade", "p_low_grade", "p_non-cancerous"}
    assert [t["properties"]["classification"]["name"] for t in tiles[:4]] == ["high grade"] * 2 + ["low grade"] * 2
    by_class = {}
    for region in regions:
        name = region["properties"]["classification"]["name"]
        by_class[name] = by_class.get(name, 0) + 1
    assert by_class == {"high grade": 2, "low grade": 2, "non-cancerous": 1}  # 4-connected groups per class
    report = validate_document({"type": "FeatureCollection", "features": features})
    assert report.ok, report.summary()
    assert measurement_name("non cancerous") == "p_non_cancerous"
    # a class has the colour of its heatmap legend in QuPath too
    colour = {t["properties"]["classification"]["name"]: t["properties"]["classification"]["color"] for t in tiles}
    names = ("high grade", "low grade", "non-cancerous")
    assert [tuple(colour[n]) for n in names] == class_colours(names)


@pytest.mark.parametrize("names, benign", [
    (("high grade", "low grade", "medium grade", "non-cancerous"), ["non-cancerous"]),
    (("normal liver", "HCC G1", "HCC G2", "HCC G3"), ["normal liver"]),
    (("non-HCC", "HCC"), ["non-HCC"]),
    (("non_tumour", "tumour"), ["non_tumour"]),
    (("benign", "stroma", "necrosis", "HCC", "cholangiocarcinoma", "fat", "blood", "background"), ["benign",
                                                                                                  "background"]),
])
def test_class_colours_read_without_a_legend(names, benign):
    """Benign classes green, graded tumour classes orange to red by grade, every class its own colour
    (tab10 once coloured LiverNet's non-cancerous red and its high grade blue)."""
    colours = dict(zip(names, class_colours(names)))
    assert len(set(colours.values())) == len(names)
    for name, (r, g, b) in colours.items():
        assert (g > r and g > b) == (name in benign), (name, (r, g, b))
    if "HCC" in names or "tumour" in names:  # an ungraded tumour class is red
        assert colours.get("HCC", colours.get("tumour")) == (215, 48, 39)
    graded = [colours[n] for n in names if any(w in n for w in ("low", "medium", "high", "G1", "G2", "G3"))]
    if graded:  # redder with grade: the green channel falls
        order = sorted(graded, key=lambda c: -c[1])
        assert [colours[n] for n in names if n in ("low grade", "HCC G1")] == order[:1]


def test_class_maps_png_draws_a_panel_per_class_and_the_top_class():
    png = class_maps_png(np.full((20, 20, 3), 230, np.uint8), 10.0, _grid(), np.eye(4)[np.arange(16) % 4],
                         ["a", "b", "c", "d"], title="slide")
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
