"""The fast loop's run of the whole chain: ``wsi-hcc demo`` on the smallest cohort it takes, then
``wsi-hcc classify`` of one tiny held-out slide with the bundle it wrote (about 15 s on 2 cores).

Only that the chain runs and writes every output is checked here; how well it classifies is the
slow ``test_classify``'s job, on a cohort large enough to mean something.
"""

from __future__ import annotations

import csv
import gzip
import json

from click.testing import CliRunner

from wsi_hcc.cli import main


def test_demo_then_classify_on_a_tiny_cohort(tmp_path):
    out = tmp_path / "demo"
    demo = CliRunner().invoke(main, ["demo", "--out", str(out), "--train-slides", "6", "--heldout-slides", "2"])
    assert demo.exit_code == 0, demo.output
    assert (out / "report.md").is_file() and (out / "model" / "card.json").is_file()
    from PIL import Image  # the ground truth beside the two tile maps, one figure per held-out slide

    with Image.open(out / "figures" / "heldout00.compare.png") as compare:
        assert compare.width > 3 * compare.height

    slide = out / "heldout" / "heldout00.svs"
    result = CliRunner().invoke(main, ["classify", str(slide), "--model", str(out / "model"),
                                       "--out", str(tmp_path / "classify")])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "classify" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["slide"], r["status"]) for r in rows] == [("heldout00", "done")]
    assert (rows[0]["model_kind"], rows[0]["model_training_data"]) == ("mil", "synthetic")
    assert "warning: this model learnt from generated slides only" in result.output
    assert "for the demo only" in (out / "report.md").read_text()
    assert 0.0 <= float(rows[0]["p_hcc"]) <= 1.0 and int(rows[0]["n_tiles"]) > 0
    assert (tmp_path / "classify" / "heldout00.heatmap.png").read_bytes().startswith(b"\x89PNG")
    geojson = json.loads(gzip.decompress((tmp_path / "classify" / "heldout00.geojson.gz").read_bytes()))
    assert len(geojson["features"]) >= int(rows[0]["n_tiles"])
    from wsi_hcc.viz.tile_table import read_tile_table

    table = read_tile_table(tmp_path / "classify" / "heldout00.tiles.csv.gz")  # what wsi-hcc view draws
    assert len(table.coords) == int(rows[0]["n_tiles"])
    assert list(table.scores) == ["p_non_tumour", "p_tumour", "attention", "p_G1", "p_G2", "p_G3"]
    assert abs(table.scores["attention"].sum() - 1) < 1e-3
