"""``wsi-hcc survival train | predict | km`` end to end with click's CliRunner, and slide embeddings
from tiny patch stores."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from wsi_hcc.cli.survival import COMMANDS, survival


def _cohort(n=120, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    event_time = rng.exponential(20 * np.exp(-0.8 * x[:, 0]))
    censor_time = rng.exponential(50, size=n)
    table = pd.DataFrame(x, columns=["age", "afp", "size"])
    table["months"] = np.round(np.minimum(event_time, censor_time), 1)
    table["death"] = (event_time <= censor_time).astype(int)
    table.insert(0, "patient", [f"P{i:03d}" for i in range(n)])
    table["slide"] = [f"S{i:03d}" for i in range(n)]
    return table


def _run(args):
    result = CliRunner().invoke(survival, args)
    return result.exit_code, result.output


def test_commands_are_exported():
    assert COMMANDS == [survival]
    assert set(survival.commands) == {"train", "predict", "km"}


@pytest.mark.slow
def test_train_predict_km_end_to_end(tmp_path):
    table = _cohort()
    table.to_csv(tmp_path / "train.csv", index=False)
    code, output = _run(["train", "--table", str(tmp_path / "train.csv"), "--time", "months", "--event", "death",
                         "--features", "age", "--features", "afp", "--id", "patient", "--folds", "3",
                         "--bootstrap", "10", "--nomogram", "size", "--time-unit", "months",
                         "--out", str(tmp_path / "run")])
    assert code == 0, output
    assert "3-fold CV" in output and "log-rank p" in output
    run = tmp_path / "run"
    for name in ("metrics.json", "risks.csv", "km.png", "nomogram.png", "model/card.json",
                 "model/weights.safetensors"):
        assert (run / name).is_file(), name
    assert (run / "km.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((run / "metrics.json").read_text())
    cv = metrics["cross_validation"]
    assert len(cv["folds"]) == 3 and cv["pooled_out_of_fold"]["c_index_harrell_ci95"] is not None
    assert cv["pooled_out_of_fold"]["c_index_harrell"] > 0.6  # age drives the hazard
    assert set(cv["folds"][0]) >= {"c_index_harrell", "c_index_uno", "td_auc", "integrated_brier_score", "cutoffs"}
    assert metrics["features"] == ["age", "afp"] and "lifelines" in metrics["versions"]
    risks = pd.read_csv(run / "risks.csv")
    assert list(risks.columns) == ["id", "time", "event", "risk", "group", "fold"]
    assert list(risks["id"]) == list(table["patient"]) and set(risks["fold"]) == {0, 1, 2}

    # predict on external patients: groups come from the stored cut-offs, even for a shifted cohort
    external = _cohort(60, seed=1)
    external["age"] += 3
    external.to_csv(tmp_path / "external.csv", index=False)
    code, output = _run(["predict", "--model", str(run / "model"), "--table", str(tmp_path / "external.csv"),
                         "--out", str(tmp_path / "pred")])
    assert code == 0, output
    predicted = pd.read_csv(tmp_path / "pred" / "risks.csv")
    card = json.loads((run / "model" / "card.json").read_text())
    cut = card["cutoffs"]["cutoffs"][0]
    assert list(predicted["group"]) == ["high" if r > cut else "low" for r in predicted["risk"]]
    assert (predicted["group"] == "high").mean() > 0.8  # not re-split at the new median
    assert list(predicted["id"]) == list(external["patient"]) and "survival_at_" in predicted.columns[-1]
    assert "c_index_harrell" in json.loads((tmp_path / "pred" / "metrics.json").read_text())["metrics"]
    _cohort(60, seed=1).to_csv(tmp_path / "external2.csv", index=False)
    code, output = _run(["predict", "--model", str(run / "model"), "--table", str(tmp_path / "external2.csv"),
                         "--out", str(tmp_path / "pred2")])
    assert code == 0 and "C-index" in output, output
    assert (tmp_path / "pred2" / "km.png").read_bytes()[:4] == b"\x89PNG"

    code, output = _run(["km", "--table", str(run / "risks.csv"), "--time", "time", "--event", "event",
                         "--group", "group", "--out", str(tmp_path / "km.png")])
    assert code == 0, output
    assert (tmp_path / "km.png").read_bytes()[:4] == b"\x89PNG" and "log-rank p" in output


def _feature_store(path, tiles, digest="model-a"):
    """A patch store as `wsi-hcc features` leaves it, as far as survival reads it: its attributes
    (with the features' provenance) and a ``features`` array."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("tiles", shape=(len(tiles), 2, 2, 3), chunks=(1, 2, 2, 3), dtype="uint8")
    group.create_array("features", data=tiles)
    group.attrs["wsi_hcc"] = {"kind": "patch-store", "features": {"digest": digest, "backbone": "test"}}


def _stores(folder, table, width=6, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for slide, age in zip(table["slide"], table["age"]):
        tiles = rng.normal(size=(int(rng.integers(3, 9)), width)).astype(np.float32)
        tiles[:, 0] += age - tiles[:, 0].mean()  # the slide mean of dimension 0 carries the hazard
        _feature_store(folder / f"{slide}.zarr", tiles)
    return folder


def test_slide_embeddings_are_the_tile_mean(tmp_path):
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.survival import slide_embeddings

    tiles = np.arange(12, dtype=np.float32).reshape(4, 3)
    _feature_store(tmp_path / "A.zarr", tiles)
    assert np.allclose(slide_embeddings([tmp_path])["A"], tiles.mean(axis=0))
    _feature_store(tmp_path / "B.zarr", tiles, digest="model-b")  # the same-model check, as everywhere
    with pytest.raises(WsiHccError, match="B.zarr: its features come from another model"):
        slide_embeddings([tmp_path])


@pytest.mark.slow
def test_train_and_predict_with_embeddings(tmp_path):
    table = _cohort(90, seed=2)
    stores = _stores(tmp_path / "stores", table)
    table.to_csv(tmp_path / "t.csv", index=False)
    code, output = _run(["train", "--table", str(tmp_path / "t.csv"), "--time", "months", "--event", "death",
                         "--embeddings", str(stores), "--folds", "1", "--bootstrap", "0", "--arch", "cox",
                         "--out", str(tmp_path / "run")])
    assert code == 0, output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["features"] == [f"emb_{i}" for i in range(6)]
    assert metrics["final_model_apparent"]["c_index_harrell"] > 0.6
    code, output = _run(["predict", "--model", str(tmp_path / "run" / "model"), "--table", str(tmp_path / "t.csv"),
                         "--out", str(tmp_path / "pred")])
    assert code == 2 and "--embeddings" in output
    code, output = _run(["predict", "--model", str(tmp_path / "run" / "model"), "--table", str(tmp_path / "t.csv"),
                         "--embeddings", str(stores), "--out", str(tmp_path / "pred")])
    assert code == 0, output
    trained = pd.read_csv(tmp_path / "run" / "risks.csv")
    predicted = pd.read_csv(tmp_path / "pred" / "risks.csv")
    assert np.allclose(trained["risk"], predicted["risk"], rtol=0, atol=1e-12)
    assert list(trained["group"]) == list(predicted["group"])


@pytest.mark.parametrize("args, message", [
    (["--time", "os", "--event", "death"], "no column 'os'"),
    (["--time", "months", "--event", "age"], "'age' must be 0 (censored) or 1"),
    (["--time", "months", "--event", "death", "--features", "age,stage"], "no column 'stage'"),
    (["--time", "months", "--event", "death", "--embeddings", "nowhere"], "nowhere: store or folder not found"),
    (["--time", "months", "--event", "death", "--groups", "fixed"], "needs a threshold"),
])
def test_train_errors_are_one_line(tmp_path, args, message):
    _cohort(30).to_csv(tmp_path / "t.csv", index=False)
    code, output = _run(["train", "--table", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"), *args])
    assert code == 2
    assert output.startswith("error: ") and message in output and output.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_patient_with_two_rows_is_refused_before_folds_leak(tmp_path):
    table = _cohort(30)
    table.loc[7, "patient"] = "P003"  # the same patient again, e.g. a second slide
    table.to_csv(tmp_path / "t.csv", index=False)
    code, output = _run(["train", "--table", str(tmp_path / "t.csv"), "--out", str(tmp_path / "run"), "--time",
                         "months", "--event", "death", "--features", "age,afp", "--id", "patient"])
    assert code == 2 and output.count("\n") == 1
    assert "patient 'P003' (patient) has 2 rows (lines 5, 9); a survival table has one row per patient" in output
    assert not (tmp_path / "run").exists()


def test_km_and_predict_errors_name_the_fix(tmp_path):
    _cohort(30).to_csv(tmp_path / "t.csv", index=False)
    code, output = _run(["km", "--table", str(tmp_path / "t.csv"), "--time", "months", "--event", "death",
                         "--group", "arm", "--out", str(tmp_path / "km.png")])
    assert code == 2 and "no group column 'arm'" in output
    code, output = _run(["predict", "--model", str(tmp_path), "--table", str(tmp_path / "t.csv"),
                         "--out", str(tmp_path / "p")])
    assert code == 2 and "not a survival model folder" in output
    code, output = _run(["km", "--table", str(tmp_path / "missing.csv"), "--time", "months", "--event", "death",
                         "--group", "arm", "--out", str(tmp_path / "km.png")])
    assert code == 2 and "table not found" in output


def test_a_text_column_among_the_features_points_to_id_and_features(tmp_path):
    """Without --id and --features every other column is a feature: the patient column's error names the fix."""
    _cohort(40).to_csv(tmp_path / "t.csv", index=False)
    code, output = _run(["train", "--table", str(tmp_path / "t.csv"), "--time", "months", "--event", "death",
                         "--out", str(tmp_path / "run")])
    assert code == 2 and output == (f"error: {tmp_path / 't.csv'}: column 'patient' holds text ('P000'), not numbers; "
                                    "every column but time, event, --id and slide is a feature without --features: "
                                    "name it with --id if it identifies patients, or list the numeric feature columns "
                                    "with --features\n")


def test_nomogram_covariates_that_are_also_features_are_refused_before_training(tmp_path):
    """The README once put age in --features and --nomogram: the risk score already held it, and its axis
    collapsed to one point."""
    _cohort(40).to_csv(tmp_path / "t.csv", index=False)
    code, output = _run(["train", "--table", str(tmp_path / "t.csv"), "--time", "months", "--event", "death",
                         "--id", "patient", "--features", "age,afp", "--nomogram", "size,age", "--out",
                         str(tmp_path / "run")])
    assert code == 2 and output == ("error: --nomogram age: also features of the model, whose risk score already "
                                    "holds them (their nomogram axes would have no range); give the nomogram "
                                    "covariates the model does not use, or leave them out of --features\n")
    assert not (tmp_path / "run").exists()
