"""``wsi-hcc demo`` and ``wsi-hcc classify`` end to end on generated slides, the QuPath files they
write checked against every ERROR and LOSS rule of the spec, and the round trip: annotations a
pathologist corrected in QuPath become tile labels that train a patch model.

Slow: the module's demo run takes about a minute on 2 cores; the tests after it reuse it.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from qupath_validator import validate_qupath_file

from wsi_hcc.cli.app import main

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "wsi-hcc-demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(out), "--train-slides", "12", "--heldout-slides", "4"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_demo_trains_a_bundle_classifies_heldout_slides_and_reports(demo):
    out, output = demo
    assert f"report:      {out / 'report.md'}" in output and "held-out accuracy" in output
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["backbone"]["file"] == "backbone.safetensors" and (out / "model" / "backbone.safetensors").is_file()
    rows = _rows(out / "classify" / "predictions.csv")
    assert [r["slide"] for r in rows] == [f"heldout{i:02d}" for i in range(4)]
    assert [r["true_label"] for r in rows] == ["tumour", "non_tumour", "tumour", "non_tumour"]
    correct = sum(r["predicted_label"] == r["true_label"] for r in rows)
    assert correct >= 3, rows
    report = (out / "report.md").read_text()
    for picture in ["training/roc.png", "figures/heldout_roc.png", "training/grade_confusion.png"] + [
            f"figures/{r['slide']}.compare.png" for r in rows]:
        assert f"({picture})" in report and (out / picture).is_file(), picture
    assert all((out / "classify" / f"{r['slide']}.heatmap.png").is_file() for r in rows)
    grade = json.loads((out / "training" / "metrics.json").read_text())["pooled"]["grade"]
    right, total = int(np.trace(grade["confusion_matrix"])), int(np.sum(grade["confusion_matrix"]))
    assert f"right for **{right} of {total}**" in report  # the grade confusion in words
    graded = [r for r in rows if r["true_grade"]]
    held_out_right = sum(r["predicted_grade"] == r["true_grade"] for r in graded)
    assert f"right for {held_out_right} of {len(graded)} held-out tumour slides" in report
    assert not list(out.rglob("*.partial")) and not list(out.rglob(".*.partial"))


def test_predictions_have_every_column_and_per_stage_seconds(demo):
    out, _ = demo
    rows = _rows(out / "classify" / "predictions.csv")
    for row in rows:
        assert row["status"] == "done" and row["reason"] == ""
        grades = [float(row[f"p_G{g}"]) for g in (1, 2, 3)]
        assert sum(grades) == pytest.approx(1.0, abs=1e-5)
        # a grade is called only for a slide called tumour; its grade probabilities stay
        called_grade = f"G{int(np.argmax(grades)) + 1}" if row["predicted_label"] == "tumour" else ""
        assert row["predicted_grade"] == called_grade
        assert 0 <= float(row["p_hcc"]) <= 1 and int(row["n_tiles"]) > 100
        assert float(row["slide_mpp"]) == 0.5 and row["mpp_source"] == "properties"
        stages = [float(row[f"seconds_{s}"]) for s in ("tile", "features", "mil", "export")]
        assert all(s > 0 for s in stages) and float(row["seconds"]) == pytest.approx(sum(stages), abs=0.01)
        assert (row["predicted_label"] == "tumour") == (float(row["p_hcc"]) >= json.loads(
            (out / "model" / "card.json").read_text())["threshold"])


def test_geojson_passes_every_error_and_loss_rule_and_carries_the_scores(demo):
    from PIL import Image

    out, _ = demo
    for row in _rows(out / "classify" / "predictions.csv"):
        stem = row["slide"]
        path = out / "classify" / f"{stem}.geojson.gz"
        with Image.open(out / "heldout" / f"{stem}.svs") as image:
            size = image.size
        report = validate_qupath_file(path, image_size=size)
        assert report.ok, report.summary()
        text = gzip.decompress(path.read_bytes()).decode()
        assert "NaN" not in text and "null" not in text and "Class probability" not in text
        features = json.loads(text)["features"]
        tiles = [f for f in features if f["properties"]["objectType"] == "tile"]
        assert len(tiles) == int(row["n_tiles"])
        assert set(tiles[0]["properties"]["measurements"]) == {"p_HCC", "attention", "p_G1", "p_G2", "p_G3"}
        attention = np.array([t["properties"]["measurements"]["attention"] for t in tiles])
        assert attention.sum() == pytest.approx(1.0, abs=1e-4)
        regions = [f for f in features if f["properties"]["objectType"] == "annotation"]
        if row["true_label"] == "tumour":
            assert regions and all(r["properties"]["classification"]["name"] == "tumour" for r in regions)


def test_tumour_regions_and_tile_probabilities_follow_the_ground_truth(demo):
    from wsi_hcc.pipelines.train_mil import tiles_in_mask
    from wsi_hcc.qupath.annotations import read_qupath_geojson

    out, _ = demo
    for stem in ("heldout00", "heldout02"):
        store = out / "classify" / "stores" / f"{stem}.zarr"
        sidecar = json.loads((out / "heldout" / f"{stem}.synth.json").read_text())

        class Slide:
            mpp, mask_path, mask_downsample = 0.5, out / "heldout" / f"{stem}.mask.png", sidecar["mask_downsample"]

        in_mask = tiles_in_mask(store, Slide)
        tiles = [f for f in json.loads(gzip.decompress(
                     (out / "classify" / f"{stem}.geojson.gz").read_bytes()))["features"]
                 if f["properties"]["objectType"] == "tile"]
        p = np.array([t["properties"]["measurements"]["p_HCC"] for t in tiles])
        assert p[in_mask].mean() > p[~in_mask].mean() + 0.3
        regions = read_qupath_geojson(out / "classify" / f"{stem}.geojson.gz")  # tiles are not annotations
        assert regions and {r.name for r in regions} == {"tumour"}


def test_a_rerun_skips_finished_slides_and_redoes_a_killed_one(demo, tmp_path):
    out, _ = demo
    work = tmp_path / "classify"
    shutil.copytree(out / "classify", work)
    before = {p.name: p.stat().st_mtime_ns for p in work.glob("*.heatmap.png")}
    (work / "heldout01.classify.json").unlink()  # as if killed while exporting heldout01
    (work / "heldout01.heatmap.png").unlink()
    result = CliRunner().invoke(main, ["classify", str(out / "heldout"), "--model", str(out / "model"),
                                       "--out", str(work), "--labels", str(out / "heldout" / "heldout.csv")])
    assert result.exit_code == 0, result.output
    assert "4 slides: 1 classified, 3 already done, 0 failed" in result.output
    rows = {r["slide"]: r for r in _rows(work / "predictions.csv")}
    assert [rows[s]["status"] for s in sorted(rows)] == ["skipped", "done", "skipped", "skipped"]
    assert rows["heldout00"]["p_hcc"] and rows["heldout00"]["true_label"] == "tumour"
    assert {p.name: p.stat().st_mtime_ns for p in work.glob("*.heatmap.png") if p.name != "heldout01.heatmap.png"} == {
        k: v for k, v in before.items() if k != "heldout01.heatmap.png"}
    manifest = json.loads((work / "classify-manifest.json").read_text())
    assert manifest["summary"] == {"done": 1, "skipped": 3, "failed": 0} and manifest["versions"]["torch"]


def test_training_stores_are_reused_and_a_bad_slide_is_one_row(demo, tmp_path):
    out, _ = demo
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "broken.svs").write_bytes(b"not a slide at all")
    store = out / "cohort" / "stores" / "syn000.zarr"
    features_before = (store / "features").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["classify", str(out / "cohort" / "slides" / "syn000.svs"), str(slides),
                                       "--model", str(out / "model"), "--out", str(tmp_path / "o"),
                                       "--stores", str(out / "cohort" / "stores")])
    assert result.exit_code == 1, result.output
    rows = {r["slide"]: r for r in _rows(tmp_path / "o" / "predictions.csv")}
    assert rows["syn000"]["status"] == "done" and rows["syn000"]["predicted_label"] == "tumour"
    assert float(rows["syn000"]["seconds_tile"]) == 0 and float(rows["syn000"]["seconds_features"]) == 0  # reused
    assert (store / "features").stat().st_mtime_ns == features_before
    assert rows["broken"]["status"] == "failed" and str(slides / "broken.svs") in rows["broken"]["reason"]
    assert f"FAILED {rows['broken']['reason']}" in result.output
    assert not (tmp_path / "o" / "broken.heatmap.png").exists()


def test_bundle_problems_are_one_line(demo, tmp_path):
    out, _ = demo
    bundle = tmp_path / "model"
    shutil.copytree(out / "model", bundle)
    (bundle / "backbone.safetensors").write_bytes(b"changed")
    result = CliRunner().invoke(main, ["classify", str(out / "heldout"), "--model", str(bundle),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {bundle / 'backbone.safetensors'}: missing or not the file the card "
                                      "names (sha256 differs); copy the whole model folder again")
    result = CliRunner().invoke(main, ["classify", str(out / "heldout"), "--model", str(tmp_path),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a MIL bundle (card.json missing)" in result.output
    result = CliRunner().invoke(main, ["classify", str(out / "heldout"), "--model", str(out / "report.md"),
                                       "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: {out / 'report.md'}: a file, not a model folder; pass --model the folder that holds card.json "
        "(OUT/model of wsi-hcc train-mil, train-patches or demo)")
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next((out / "heldout").glob("*.svs")), one)
    result = CliRunner().invoke(main, ["classify", str(one), "--model", str(out / "model" / "card.json"),
                                       "--out", str(tmp_path / "by-card")])
    assert result.exit_code == 0, result.output  # the card names its folder
    assert "1 slide: 1 classified" in result.output
    help_text = CliRunner().invoke(main, ["classify", "--help"]).output
    assert "Examples:" in help_text and "wsi-hcc classify slides/ --model" in help_text


def test_pathologist_corrections_in_qupath_become_labels_that_train_a_patch_model(demo, tmp_path):
    """Export -> the pathologist redraws the tumour and adds a normal region in QuPath -> re-export
    (tiles and all) -> tile labels from the corrected regions -> a patch classifier trains on them."""
    from PIL import Image

    from wsi_hcc.pipelines.train_mil import tiles_in_mask
    from wsi_hcc.pipelines.train_patches import run_training
    from wsi_hcc.training.config import TrainConfig
    from wsi_hcc.training.data import load_training_data
    from wsi_hcc.training.synth_labels import mask_geojson

    out, _ = demo
    annotations = tmp_path / "corrected"
    annotations.mkdir()
    truth = {}
    for i in range(4):
        stem = f"heldout{i:02d}"
        sidecar = json.loads((out / "heldout" / f"{stem}.synth.json").read_text())
        exported = json.loads(gzip.decompress((out / "classify" / f"{stem}.geojson.gz").read_bytes()))
        drawn = mask_geojson(np.asarray(Image.open(out / "heldout" / f"{stem}.mask.png")), sidecar["mask_downsample"])
        corrected = [f for f in exported["features"] if f["properties"]["objectType"] == "tile"]  # kept, ignored
        for feature in drawn["features"]:  # the pathologist's outlines replace our regions
            name = feature["properties"]["classification"]["name"]
            feature["properties"]["classification"]["name"] = {"tumour": "Tumor", "non_tumour": "Normal"}[name]
            corrected.append(feature)
        (annotations / f"{stem}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": corrected}))

        class Slide:
            mpp, mask_path, mask_downsample = 0.5, out / "heldout" / f"{stem}.mask.png", sidecar["mask_downsample"]

        truth[stem] = tiles_in_mask(out / "classify" / "stores" / f"{stem}.zarr", Slide)
    (tmp_path / "split.csv").write_text("slide,patient,split\nheldout00,p0,train\nheldout01,p1,train\n"
                                        "heldout02,p2,validation\nheldout03,p3,test\n")
    config = TrainConfig.model_validate({
        "backbone": "test_resnet", "class_names": ["non_tumour", "tumour"], "input_px": 32,
        "stores": [str(out / "classify" / "stores")],
        "labels": {"annotations": str(annotations), "slide_csv": str(tmp_path / "split.csv"),
                   "class_map": {"Tumor": "tumour", "Normal": "non_tumour"}},
        "batch_size": 32, "epochs": 1, "device": "cpu"})
    data = load_training_data(config)
    for slide in data.slides:
        labelled = slide.labels >= 0
        agreement = (slide.labels[labelled] == truth[slide.stem][labelled].astype(int)).mean()
        assert labelled.mean() > 0.2 and agreement > 0.9, (slide.stem, agreement)
    assert any((s.labels == 1).any() for s in data.slides) and any((s.labels == 0).any() for s in data.slides)
    report = run_training(config.with_overrides(max_tiles_per_slide=48), tmp_path / "patch_run")
    assert (report.out_dir / "best.safetensors").is_file()


def test_a_fresh_process_trains_a_bundle_on_descriptor_features_and_classifies_with_it(demo, tmp_path):
    """The colour/texture backbone is registered by the code that made the features; a new process
    (train-mil, then classify, from the shell) must rebuild it from the recorded card."""
    import subprocess
    import sys

    import yaml

    out, _ = demo
    config = tmp_path / "mil.yaml"
    config.write_text(yaml.safe_dump({"mil": {
        "stores": [str(out / "cohort" / "stores")], "labels_csv": str(out / "cohort" / "slides.csv"),
        "class_names": ["non_tumour", "tumour"], "model": {"name": "gated", "hidden": 16, "dropout": 0.0},
        "folds": 2, "epochs": 2, "bootstrap": 0, "cpu_threads": 1}}))
    for args in (["train-mil", "--config", str(config), "--out", str(tmp_path / "run")],
                 ["classify", str(out / "heldout" / "heldout00.svs"), "--model", str(tmp_path / "run" / "model"),
                  "--out", str(tmp_path / "classify")]):
        done = subprocess.run([sys.executable, "-m", "wsi_hcc", *args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    assert _rows(tmp_path / "classify" / "predictions.csv")[0]["status"] == "done"


def test_real_slide_regions_are_one_polygon_per_connected_group_of_tumour_tiles(demo, real_svs, tmp_path):
    """classify of the real Aperio slide (0.499 um/px; the bundle's 32 px tiles at 1 um/px span 64.13
    level-0 px): every edge-connected group of tiles at or above the region threshold is one region."""
    from scipy import ndimage

    from wsi_hcc.store.patch_store import open_store

    out, _ = demo
    first = CliRunner().invoke(main, ["classify", str(real_svs), "--model", str(out / "model"),
                                      "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output

    def features(folder):
        return json.loads(gzip.decompress((folder / "CMU-1-Small-Region.geojson.gz").read_bytes()))["features"]

    p = np.array([f["properties"]["measurements"]["p_HCC"] for f in features(tmp_path / "first")
                  if f["properties"]["objectType"] == "tile"])
    threshold = float(np.median(p))  # half the tiles in: many groups, whatever this model makes of skin
    result = CliRunner().invoke(main, ["classify", str(real_svs), "--model", str(out / "model"), "--out",
                                       str(tmp_path / "median"), "--stores", str(tmp_path / "first" / "stores"),
                                       "--region-threshold", f"{threshold:.7g}"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "median" / "CMU-1-Small-Region.geojson.gz"
    report = validate_qupath_file(path, image_size=(2220, 2967))
    assert report.ok, report.summary()  # no ERROR, no LOSS

    store = open_store(tmp_path / "first" / "stores" / "CMU-1-Small-Region.zarr")
    stride = store.attrs["wsi_hcc"]["tile_spec"]["stride_level0"]
    assert stride % 1 != 0  # the case that split regions before
    cols, rows = np.rint(store["coords"][:] / stride).astype(int).T
    exported = features(tmp_path / "median")
    tiles = [f for f in exported if f["properties"]["objectType"] == "tile"]
    tumour = np.array([t["properties"]["classification"]["name"] == "tumour" for t in tiles])
    grid = np.zeros((rows.max() + 1, cols.max() + 1), dtype=bool)
    grid[rows[tumour], cols[tumour]] = True
    n_groups = ndimage.label(grid, structure=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])[1]
    regions = [f for f in exported if f["properties"]["objectType"] == "annotation"]
    assert n_groups >= 3 and len(regions) == n_groups


def test_view_shows_each_tiles_geojson_measurements_and_its_regions(demo):
    """``wsi-hcc view`` on a real classify folder: at a tile's centre it reports what the GeoJSON
    says of that tile, and its tumour regions cover the GeoJSON's annotations."""
    import shapely
    from starlette.testclient import TestClient

    from wsi_hcc.view import create_app, load_catalog

    out, _ = demo
    folder = out / "classify"
    with TestClient(create_app(load_catalog(folder)), base_url="http://localhost") as client:
        for row in _rows(folder / "predictions.csv")[:2]:
            stem = row["slide"]
            info = client.get(f"/api/slides/{stem}").json()
            assert [layer["name"] for layer in info["layers"]] == ["p_non_tumour", "p_tumour", "top_class",
                                                                     "attention", "p_G1", "p_G2", "p_G3", "tissue"]
            features = json.loads(gzip.decompress((folder / f"{stem}.geojson.gz").read_bytes()))["features"]
            tiles = [f for f in features if f["properties"]["objectType"] == "tile"]
            top_attention = max(f["properties"]["measurements"]["attention"] for f in tiles)
            for feature in tiles[:: max(1, len(tiles) // 7)]:
                (x0, y0), (x1, y1) = feature["geometry"]["coordinates"][0][0], feature["geometry"]["coordinates"][0][2]
                values = client.get(f"/api/slides/{stem}/values?x={(x0 + x1) / 2}&y={(y0 + y1) / 2}").json()
                assert (values["tile"]["x0"], values["tile"]["y0"]) == (x0, y0)
                for name, measured in feature["properties"]["measurements"].items():
                    shown = values["values"]["p_tumour" if name == "p_HCC" else name]
                    if name == "attention":  # QuPath gets the raw weight, the viewer the heatmap's share of the top
                        measured /= top_attention
                    assert shown == pytest.approx(measured, rel=1e-4, abs=1e-9), (stem, name)
            annotations = [shapely.geometry.shape(f["geometry"]) for f in features
                           if f["properties"]["objectType"] == "annotation"]
            regions = client.get(f"/api/slides/{stem}/regions").json()
            shown = [shapely.Polygon(p[0], p[1:]) for r in regions for p in r["polygons"]]
            assert shapely.union_all(shown).symmetric_difference(shapely.union_all(annotations)).area < 1.0
