"""A trained MVI model separates held-out phantoms and its Grad-CAM sits in the ring, not the far liver;
``radiology train`` end to end. Phantoms: MVI = enhancing satellite nodules in the 0-6 mm ring."""

import json
import time

import pytest
import torch
from click.testing import CliRunner
from readme_sections import readme_section

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


@pytest.mark.slow
def test_the_readme_mvi_commands_give_the_readme_claim(tmp_path, monkeypatch):
    """README.md's MVI commands, run as printed (in a scratch folder), reproduce the figures printed beside them."""
    import re

    from wsi_hcc.cli import main

    text, commands = readme_section("MVI and grade models")
    commands = commands[:4]  # the first block; the --cases example needs a CSV of your own
    assert [c[:3] for c in commands] == [["wsi-hcc", "radiology", cmd] for cmd in
                                         ("train", "phantom", "predict", "explain")]
    found = re.search(r"held-out AUC ([\d.]+), with mean CAM per voxel ([\d.]+)× higher in the ring than in the far "
                      r"liver \(([\d.]+) vs ([\d.]+); ring higher in (\d+) of (\d+) held-out", text)
    claim = dict(zip(("auc", "ratio", "ring", "liver"), map(float, found.groups()[:4])))
    claim["above"], claim["cases"] = map(int, found.groups()[4:])
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    for command in commands:
        result = CliRunner().invoke(main, command[1:])
        assert result.exit_code == 0, (command, result.output)
    metrics = json.loads((tmp_path / "runs" / "mvi" / "metrics.json").read_text())
    cam = metrics["cam"]
    ring, liver = cam["mean_per_voxel"]["ring"], cam["mean_per_voxel"]["liver"]
    print(f"\nREADME claims {claim}; the commands give AUC {metrics['held_out']['roc_auc']:.3f}, ring {ring:.4f} vs "
          f"far liver {liver:.4f} ({ring / liver:.2f}x), {cam['cases_ring_above_liver']} of {cam['cases']}")
    assert metrics["held_out"]["roc_auc"] == pytest.approx(claim["auc"], abs=0.02)
    assert ring > liver  # the claim's direction
    assert ring / liver == pytest.approx(claim["ratio"], rel=0.25)
    assert ring == pytest.approx(claim["ring"], rel=0.25) and liver == pytest.approx(claim["liver"], rel=0.25)
    assert cam["cases"] == claim["cases"] and abs(cam["cases_ring_above_liver"] - claim["above"]) <= 1
    energy = json.loads((tmp_path / "runs" / "case1_cam" / "energy.json").read_text())
    assert set(energy["energy"]) >= {"tumour", "ring", "liver", "outside"}
    assert json.loads((tmp_path / "runs" / "case1" / "predictions.json").read_text())["predicted"] in ("mvi", "no_mvi")
