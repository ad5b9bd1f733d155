"""Patch-classifier model folders in ``wsi-hcc classify``: the authors' LiverNet on the real slide,
every tile scored and mapped per class, honest about what its card only assumes."""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from qupath_validator import validate_qupath_file

from wsi_hcc.cli.app import main

KMC = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "models" / "livernet" / "KMC" / \
    "LiverNet_test_fold1_weights.h5"
needs_kmc = pytest.mark.skipif(not KMC.is_file(), reason="the authors' LiverNet weights (../shared/data) are absent")


@pytest.fixture(scope="module")
def livernet_run(real_svs, tmp_path_factory):
    root = tmp_path_factory.mktemp("livernet")
    made = CliRunner().invoke(main, ["bundle", "--arch", "livernet", "--weights", str(KMC), "--out", str(root / "m")])
    assert made.exit_code == 0, made.output
    result = CliRunner().invoke(main, ["classify", str(real_svs), "--model", str(root / "m"),
                                       "--out", str(root / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return root, result.output


@needs_kmc
def test_bundle_writes_a_model_folder_with_an_honest_card(livernet_run):
    root, _ = livernet_run
    card = json.loads((root / "m" / "card.json").read_text())
    assert card["format"] == "wsi-hcc-patch-model/1" and card["kind"] == "patch-classifier"
    model_card = card["model_card"]
    assert model_card["class_names"] == ["high grade", "low grade", "medium grade", "non-cancerous"]
    assert (model_card["class_names_source"], model_card["mpp_source"]) == ("inferred", "assumed")
    assert card["training"]["weights_sha256"] == "09486adef032b034716fb5716b240bb7d1159fd6803fb87c3bcc671b6e3dc46b"
    assert "KMC" in card["training"]["data"]


@needs_kmc
def test_classify_scores_every_tile_of_the_real_slide_as_the_model_does(livernet_run, real_svs):
    """Tile probabilities equal the model applied to the same tiles read from the slide with openslide:
    the store's JPEG (4:4:4, q90) moves them by at most 0.05 (measured: 0.010, every top class the same)."""
    from wsi_hcc.models import create_backbone, to_model_input
    from wsi_hcc.slide.readers import open_slide

    root, output = livernet_run
    assert "note: this model's class names inferred; resolution assumed" in output
    out = root / "out"
    with open(out / "predictions.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["model_kind"] == "patch-classifier" and row["status"] == "done"
    assert row["model_assumptions"] == "class names inferred; resolution assumed"
    assert row["model_training_data"] == "real" and "warning: this model learnt" not in output
    names = ["high_grade", "low_grade", "medium_grade", "non-cancerous"]
    assert abs(sum(float(row[f"p_{n}"]) for n in names) - 1) < 1e-4
    assert abs(sum(float(row[f"frac_{n}"]) for n in names) - 1) < 1e-4
    tiles = list(csv.DictReader(io.StringIO(gzip.decompress((out / "CMU-1-Small-Region.tiles.csv.gz").read_bytes())
                                            .decode())))
    assert len(tiles) == int(row["n_tiles"]) > 0
    model = create_backbone("livernet", weights=KMC).eval()
    reader = open_slide(real_svs)
    size = round(float(tiles[0]["tile_size_level0"]))
    direct = np.stack([reader.read_region((int(t["x"]), int(t["y"])), 0, (size, size)) for t in tiles])
    reader.close()
    with torch.inference_mode():
        expected = model(to_model_input(torch.from_numpy(direct), model.card)).softmax(dim=1).numpy()
    written = np.array([[float(t[f"p_{n}"]) for n in names] for t in tiles])
    assert np.abs(written - expected).max() < 0.05
    assert (out / "CMU-1-Small-Region.heatmap.png").read_bytes().startswith(b"\x89PNG")
    report = validate_qupath_file(out / "CMU-1-Small-Region.geojson.gz")
    assert report.ok, report.summary()


@needs_kmc
def test_a_rerun_skips_and_a_store_of_another_tile_size_needs_allow_resize(livernet_run, real_svs, tmp_path):
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.models import create_backbone
    from wsi_hcc.pipelines.classify_patches import score_tiles
    from wsi_hcc.pipelines.tile import run_tile
    from wsi_hcc.tiling.config import TileConfig

    root, _ = livernet_run
    again = CliRunner().invoke(main, ["classify", str(real_svs), "--model", str(root / "m"), "--out",
                                      str(root / "out"), "--device", "cpu"])
    assert again.exit_code == 0 and "1 already done" in again.output
    # a store made at 256 px (the model takes 224: 1.14x the field of view) is refused unless resizing is asked for
    run_tile([real_svs], tmp_path / "stores", TileConfig(target_mpp=0.5, tile_px=256))
    store = tmp_path / "stores" / f"{real_svs.stem}.zarr"
    livernet = create_backbone("livernet", weights=root / "m").eval()
    with pytest.raises(WsiHccError, match="tiles are 256 px but livernet takes 224 px .* pass --allow-resize"):
        score_tiles(store, livernet, allow_resize=False)
    assert score_tiles(store, livernet, allow_resize=True).shape[1] == 4


def test_bundle_names_classes_and_resolution_when_told(tmp_path):
    from wsi_hcc.models import create_backbone, save_weights
    from wsi_hcc.pipelines.classify_patches import bundle_patch_classifier

    torch.manual_seed(0)
    model = create_backbone("livernet", num_classes=4)
    save_weights(model, model.card, tmp_path / "w.safetensors")
    made = bundle_patch_classifier("livernet", tmp_path / "w.safetensors", tmp_path / "m",
                                   classes=["a", "b", "c", "d"], target_mpp=0.25)
    assert made.card.class_names == ("a", "b", "c", "d") and made.card.assumptions == ()
    assert json.loads((tmp_path / "m" / "card.json").read_text())["model_card"]["target_mpp"] == 0.25
    result = CliRunner().invoke(main, ["bundle", "--arch", "livernet", "--weights", str(tmp_path / "w.safetensors"),
                                       "--classes", "a,b", "--out", str(tmp_path / "m2")])
    assert result.exit_code == 2 and "--classes: 2 names for 4 outputs" in result.output
    again = ["bundle", "--arch", "livernet", "--weights", str(tmp_path / "w.safetensors"), "--out", str(tmp_path / "m")]
    result = CliRunner().invoke(main, again)
    assert result.exit_code == 2 and "m: already holds files; choose another --out, or pass --overwrite" in (
        result.output)
    assert CliRunner().invoke(main, [*again, "--overwrite"]).exit_code == 0
    assert not list(tmp_path.glob(".*partial"))
