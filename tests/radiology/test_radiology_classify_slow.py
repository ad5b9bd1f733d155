"""A trained MVI model separates held-out phantoms and its Grad-CAM sits in the ring, not the far liver;
``radiology train`` end to end. Phantoms: MVI = enhancing satellite nodules in the 0-6 mm ring."""

import json
import time

import pytest
import torch
from click.testing import CliRunner

from wsi_hcc.radiology.classify_run import run_training
from wsi_hcc.radiology.classify_train import TrainConfig
from wsi_hcc.radiology.cohort import phantom_cohort
from wsi_hcc.radiology.crops import CropSpec


@pytest.mark.slow
def test_trained_mvi_model_separates_held_out_phantoms_and_looks_at_the_ring(tmp_path):
    torch.set_num_threads(2)
    spec = CropSpec(size_vox=24, spacing_mm=2.0)
    started = time.perf_counter()
    cases = phantom_cohort(56, seed=7, spec=spec, n_satellites=8, noise_hu=8.0)
    cohort_s = time.perf_counter() - started
    config = TrainConfig(task="mvi", model="multiphase", crop=spec, epochs=60, seed=0)
    report = run_training(config, cases, tmp_path / "run", test_fraction=0.3)
    held = report["held_out"]
    cam = report["cam"]
    print(f"\ncohort {cohort_s:.1f} s, training {report['training']['seconds']:.1f} s, held-out AUC "
          f"{held['roc_auc']:.3f} on {held['cases']} cases; CAM per voxel {cam['mean_per_voxel']}, "
          f"fractions {cam['fraction']}, ring > liver in {cam['cases_ring_above_liver']}/{cam['cases']}")
    assert held["cases"] == 17 and report["training"]["cases"] == 39
    assert held["roc_auc"] >= 0.85
    assert cam["cases"] >= 8
    assert cam["mean_per_voxel"]["ring"] > cam["mean_per_voxel"]["liver"]
    assert cam["cases_ring_above_liver"] > cam["cases"] / 2
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["held_out"]["roc_auc"] == held["roc_auc"]
    assert (tmp_path / "run" / "model" / "weights.safetensors").is_file()
    assert (tmp_path / "run" / "cam_example" / "cam.nii.gz").is_file()


@pytest.mark.slow
def test_cli_train_graph_with_nomogram(tmp_path):
    from wsi_hcc.cli.radiology_models import predict, train

    runner = CliRunner()
    out = tmp_path / "graph"
    result = runner.invoke(train, ["--arch", "graph", "--phantoms", "12", "--crop-size", "24", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "held-out ROC AUC" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "graph" and "nomogram_roc_auc" in metrics["held_out"]
    assert (out / "nomogram.png").read_bytes()[:4] == b"\x89PNG"
    card = json.loads((out / "model" / "card.json").read_text())
    assert card["nomogram"]["covariates"] == ["graph_score", "diameter_mm", "afp_log10"]
    lines = (out / "predictions.csv").read_text().splitlines()
    assert lines[0] == "case,split,label,p_no_mvi,p_mvi" and len(lines) == 13
    # Predict with the nomogram needs the covariate.
    from wsi_hcc.radiology import make_phantom, write_phantom

    phantom = write_phantom(make_phantom(shape=(32, 96, 96), phases=("arterial", "portal"), mvi=True, seed=9),
                            tmp_path / "ph")
    common = ["--model", str(out / "model"), "--image", f"arterial={phantom / 'arterial.nii.gz'}",
              "--image", f"portal={phantom / 'portal.nii.gz'}", "--tumour", str(phantom / "labels.nii.gz"),
              "--tumour-label", "2", "--liver", str(phantom / "labels.nii.gz")]
    result = runner.invoke(predict, [*common, "--out", str(tmp_path / "p1")])
    assert result.exit_code == 2 and "afp_log10" in result.output
    result = runner.invoke(predict, [*common, "--covariate", "afp_log10=2.0", "--out", str(tmp_path / "p2")])
    assert result.exit_code == 0, result.output
    prediction = json.loads((tmp_path / "p2" / "predictions.json").read_text())
    assert 0.0 <= prediction["nomogram"]["probability"] <= 1.0
