"""Recurrence after ablation: margin geometry, the zone from a threshold, the feature rows, the ``radiology ablation``
command, and the slow phantom proof (an incomplete margin drives progression; Cox and nomogram via survival)."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology import save_nifti
from wsi_hcc.radiology.ablation import (
    GEOMETRY_FEATURES,
    ablation_features,
    ablation_phantom,
    margin_geometry,
    zone_from_threshold,
)
from wsi_hcc.radiology.volume import Volume


def _spheres(shift_mm: float, grow_mm: float):
    grid = np.stack(np.meshgrid(*[np.arange(40.0)] * 3, indexing="ij"), axis=-1)  # 1 mm voxels
    tumour = np.linalg.norm(grid - 20, axis=-1) <= 6
    zone = np.linalg.norm(grid - 20 - np.array([0, 0, shift_mm]), axis=-1) <= 6 + grow_mm
    return tumour, zone


def test_margin_geometry_of_concentric_and_shifted_spheres():
    tumour, zone = _spheres(0.0, 7.0)
    g = margin_geometry(tumour, zone, (1.0, 1.0, 1.0), 5.0)
    assert g["min_margin_mm"] == pytest.approx(7.0, abs=1.0)
    assert g["margin_coverage"] == 1.0 and g["tumour_uncovered"] == 0.0
    assert g["zone_ml"] == pytest.approx(4 / 3 * np.pi * 13 ** 3 / 1000, rel=0.05)
    # shifted by 9 mm with a 3 mm larger radius: tumour sticks out by 6 mm on one side
    tumour, zone = _spheres(9.0, 3.0)
    g = margin_geometry(tumour, zone, (1.0, 1.0, 1.0), 5.0)
    assert g["min_margin_mm"] == pytest.approx(-6.0, abs=1.0)
    assert 0.3 < g["tumour_uncovered"] < 0.8 and 0.0 < g["margin_coverage"] < 0.9
    # concentric with a 3 mm margin: the tumour is covered, the 5 mm margin only partly (3 of 5 mm shells)
    tumour, zone = _spheres(0.0, 3.0)
    thin = margin_geometry(tumour, zone, (1.0, 1.0, 1.0), 5.0)
    assert thin["min_margin_mm"] == pytest.approx(3.0, abs=1.0) and thin["tumour_uncovered"] == 0.0
    assert 0.3 < thin["margin_coverage"] < 0.7


def test_zone_from_threshold_recovers_the_phantom_zone():
    pre, post, tumour, zone, liver = ablation_phantom(margin_mm=4.0, offset_mm=2.0, seed=3)
    found = zone_from_threshold(post["t1"], tumour.array, within=liver.array)
    dice = 2 * (found & zone.array).sum() / (found.sum() + zone.array.sum())
    assert dice > 0.9
    with pytest.raises(WsiHccError, match="no voxel of the post-ablation phase lies above"):
        zone_from_threshold(post["t1"], tumour.array, threshold=1e9)


def test_features_carry_geometry_regions_and_habitats():
    pre, post, tumour, zone, liver = ablation_phantom(margin_mm=-1.0, offset_mm=3.0, seed=4)
    row, used = ablation_features(pre, post, tumour, zone)
    assert used.sum() == zone.array.sum()
    assert set(GEOMETRY_FEATURES) <= set(row) and row["min_margin_mm"] < 0 < row["tumour_uncovered"]
    assert {"tumour_pre_arterial_mean", "margin_post_t1_glcm_contrast", "zone_post_t1_entropy",
            "tumour_habitat1_fraction"} <= set(row)
    assert sum(row[f"tumour_habitat{k}_fraction"] for k in (1, 2, 3)) == pytest.approx(1.0)
    with pytest.raises(WsiHccError, match="pre-ablation and one post-ablation"):
        ablation_features(pre, {}, tumour)


def test_cli_writes_one_row_per_case(tmp_path):
    from wsi_hcc.cli.radiology_ablation import ablation

    rows = []
    for i, (margin, offset) in enumerate(((6.0, 0.0), (-1.0, 3.0))):
        pre, post, tumour, zone, liver = ablation_phantom(margin, offset, seed=20 + i)
        for name, volume in [*pre.items(), *post.items()]:
            save_nifti(volume, tmp_path / f"{name}{i}.nii.gz")
        save_nifti(tumour.with_array(tumour.array.astype(np.uint8)), tmp_path / f"tumour{i}.nii.gz")
        save_nifti(zone.with_array(zone.array.astype(np.uint8)), tmp_path / f"zone{i}.nii.gz")
        save_nifti(liver.with_array(liver.array.astype(np.uint8)), tmp_path / f"liver{i}.nii.gz")
        rows.append({"case": f"c{i}", "pre:arterial": f"arterial{i}.nii.gz", "pre:portal": f"portal{i}.nii.gz",
                     "post:t1": f"t1{i}.nii.gz", "tumour": f"tumour{i}.nii.gz",
                     "ablation": f"zone{i}.nii.gz" if i == 0 else "", "liver": f"liver{i}.nii.gz",
                     "time": str(10 + i), "event": str(i)})
    with (tmp_path / "cases.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    runner = CliRunner()
    result = runner.invoke(ablation, ["--cases", str(tmp_path / "cases.csv"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "2 cases, 1 with a margin under 5 mm" in result.output
    with (tmp_path / "out" / "features.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["zone_from"] for r in table] == ["mask", "threshold"]
    assert float(table[0]["margin_coverage"]) == 1.0 and float(table[1]["min_margin_mm"]) < 0
    truth = margin_geometry(tumour.array, zone.array, tumour.spacing_mm)  # case 1: the thresholded zone is close
    assert float(table[1]["margin_coverage"]) == pytest.approx(truth["margin_coverage"], abs=0.1)
    assert table[1]["event"] == "1" and json.loads((tmp_path / "out" / "features.json").read_text())["cases"] == 2
    for args, message in ((["--phantoms", "8", "--cases", str(tmp_path / "cases.csv")], "not both"),
                          (["--cases", str(tmp_path / "missing.csv")], "no such file"),
                          (["--phantoms", "8", "--margin-mm", "3"], "apply to --cases only")):
        result = runner.invoke(ablation, [*args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1, result.output


def test_a_volume_on_another_grid_is_resampled():
    pre, post, tumour, zone, liver = ablation_phantom(margin_mm=5.0, offset_mm=0.0, seed=6)
    coarse = Volume(np.asarray(tumour.array[::2], np.uint8), spacing_mm=(5.0, 2.0, 2.0), modality="SEG")
    row, _ = ablation_features(pre, post, coarse, zone, n_habitats=0)
    assert row["tumour_ml"] > 0 and row["margin_coverage"] > 0.8


@pytest.mark.slow
def test_margin_drives_progression_in_a_cox_model_with_a_nomogram(tmp_path):
    from wsi_hcc.radiology.ablation import ablation_cohort
    from wsi_hcc.survival import load_model
    from wsi_hcc.survival.config import SurvivalConfig
    from wsi_hcc.survival.pipeline import DataSpec, run_survival_training

    rows = ablation_cohort(48, seed=1)
    columns = list(rows[0])
    with (tmp_path / "features.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    config = SurvivalConfig(model="cox", folds=3, bootstrap=0,
                            nomogram={"covariates": ["tumour_ml"]})
    # the nomogram adds the tumour's volume beside the model's risk score (the model holds the margin)
    spec = DataSpec(str(tmp_path / "features.csv"), "time", "event", ("margin_coverage",), "case")
    report = run_survival_training(spec, config, tmp_path / "run")
    c_index = report.metrics["cross_validation"]["fold_mean"]["c_index_harrell"]["mean"]
    coef = load_model(report.model_dir).predictor.coef
    print(f"\nablation: {sum(r['event'] for r in rows)} events of {len(rows)}; held-out C-index {c_index:.3f}; "
          f"Cox coefficient per SD: margin_coverage {coef[0]:.2f}")
    assert c_index >= 0.7
    assert coef[0] < 0  # a more complete margin, a lower hazard
    assert (tmp_path / "run" / "nomogram.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("command", [["radiology", "ablation"], ["radiology", "survival", "train"],
                                     ["radiology", "train", "--task", "mvi"]])
def test_phantoms_or_cases_exactly_one(tmp_path, command):
    from click.testing import CliRunner

    from wsi_hcc.cli import main

    neither = CliRunner().invoke(main, [*command, "--out", str(tmp_path / "o")])
    assert neither.exit_code == 2 and neither.output.endswith("not neither\n")
    assert neither.output.startswith("error: give either --phantoms N (a phantom cohort) or --cases ")
    cases = tmp_path / "cases.csv"
    cases.write_text("case\n")
    both = CliRunner().invoke(main, [*command, "--phantoms", "8", "--cases", str(cases), "--out", str(tmp_path / "o")])
    assert both.exit_code == 2 and both.output.endswith("not both\n") and len(both.output.splitlines()) == 1
