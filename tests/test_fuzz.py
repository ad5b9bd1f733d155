"""Random bytes and random mutations of valid inputs, fed to every loader a user's file reaches:
the answer is a result or one of our one-line errors, never a traceback and never a hang."""

import gzip
import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsi_hcc.errors import WsiHccError

FUZZ = settings(max_examples=40, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)


@st.composite
def _mutated(draw, valid: bytes) -> bytes:
    """Valid bytes with a random slice overwritten, cut or repeated."""
    start = draw(st.integers(0, len(valid) - 1))
    kind = draw(st.sampled_from(["overwrite", "truncate", "insert"]))
    noise = draw(st.binary(min_size=1, max_size=32))
    if kind == "overwrite":
        return valid[:start] + noise + valid[start + len(noise):]
    if kind == "truncate":
        return valid[:start]
    return valid[:start] + noise + valid[start:]


def _feed(tmp_path, name: str, content: bytes, load) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    try:
        load(path)
    except WsiHccError as exc:
        assert "\n" not in str(exc).strip(), str(exc)


def _random_or_mutated(valid: bytes):
    return st.one_of(st.binary(max_size=512), _mutated(valid))


def _loaders():
    from wsi_hcc.mil.config import load_mil_config
    from wsi_hcc.qupath.annotations import read_qupath_geojson
    from wsi_hcc.survival.data import read_table
    from wsi_hcc.tiling.config import load_config
    from wsi_hcc.tiling.inputs import collect_slides
    from wsi_hcc.training.datasets import read_slide_labels

    geojson = json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {
        "classification": {"name": "Tumor"}}, "geometry": {"type": "Polygon", "coordinates": [
            [[0, 0], [100, 0], [100, 100], [0, 0]]]}}]}).encode()
    return {
        "tile config": ("tile.yaml", b"tile:\n  target_mpp: 0.5\n  tile_px: 224\n  tissue:\n    thumbnail_mpp: 8\n",
                        load_config),
        "MIL config": ("mil.yaml", b"mil:\n  stores: [s]\n  labels_csv: l.csv\n  folds: 3\n", load_mil_config),
        "manifest": ("m.csv", b"path,mpp\na.svs,0.5\nb.svs,0.2527\n", lambda p: collect_slides([p])),
        "labels": ("labels.csv", b"slide,patient,label,grade\na,p1,HCC,G2\nb,p2,non-HCC,\n", read_slide_labels),
        "survival table": ("t.csv", b"patient,months,death,age\nP1,3.5,1,60\nP2,10,0,55\n", read_table),
        "GeoJSON": ("a.geojson", geojson, read_qupath_geojson),
        "GeoJSON.gz": ("a.geojson.gz", gzip.compress(geojson), read_qupath_geojson),
    }


@pytest.mark.parametrize("kind", list(_loaders()))
def test_text_inputs_give_a_result_or_one_line(tmp_path, kind):
    name, valid, load = _loaders()[kind]

    @FUZZ
    @given(content=_random_or_mutated(valid))
    def check(content):
        _feed(tmp_path, name, content, load)

    check()


def test_slides_give_a_result_or_one_line(real_svs, tmp_path):
    """Mutations inside the real SVS's header and tile index: opening it, and reading a thumbnail."""
    from wsi_hcc.slide.readers import open_slide

    valid = real_svs.read_bytes()

    def load(path):
        reader = open_slide(path)
        try:
            reader.read_region((0, 0), reader.level_count - 1, (64, 64))
        finally:
            reader.close()

    @FUZZ
    @given(head=_mutated(valid[:4096]))  # the TIFF header and first IFDs live here
    def check(head):
        _feed(tmp_path, "s.svs", head + valid[4096:], load)

    check()


def test_mil_cards_give_a_bundle_or_one_line(tmp_path):
    from wsi_hcc.mil import build_mil_model, load_mil_bundle
    from wsi_hcc.mil.bundle import save_mil_bundle

    model = build_mil_model("gated", 8, {"label": 2}, hidden=16)
    card = {"kind": "best_fold", "class_names": ["a", "b"], "grade_names": None, "threshold": 0.5,
            "temperature": 1.0, "members": [{"fold": 0}], "features": {"backbone": "x", "card": {}}, "backbone": None,
            "model": {"name": "gated", "in_dim": 8, "heads": [["label", 2]], "hidden": 16, "dropout": 0.0,
                      "k_sample": 8}}
    bundle = save_mil_bundle(tmp_path / "model", card, [(0, model.state_dict())], b"b", "mil: {}\n")
    valid = (bundle / "card.json").read_bytes()

    @FUZZ
    @given(content=_random_or_mutated(valid))
    def check(content):
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(bundle, work)
        _feed(work, "card.json", content, lambda path: load_mil_bundle(path.parent))

    check()
