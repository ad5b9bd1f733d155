"""Training the MVI / grade classifiers from a CSV of cases on disk (``radiology train --cases``): phantoms written
as NIfTI stand in for real cases; the crops must equal the phantom path's; bad tables are one-line errors."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from real_ct import real_ct_with_drawn_tumour

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology import make_phantom, write_phantom
from wsi_hcc.radiology.case_table import check_table_for_model, read_case_table, table_cohort
from wsi_hcc.radiology.classify_train import TrainConfig, predict_proba, untrained_model
from wsi_hcc.radiology.cohort import phantom_case
from wsi_hcc.radiology.crops import CropSpec

SPEC = CropSpec(size_vox=16, spacing_mm=3.0)
N_CASES = 12


def _phantom(i):
    return make_phantom(shape=(24, 64, 64), spacing_mm=(2.5, 2.0, 2.0), phases=("arterial", "portal"),
                        mvi=bool(i % 2), heterogeneity=0.1 + 0.07 * i, lesion_radius_mm=(6.0, 9.0), seed=i)


def _write_csv(path, rows, columns=None):
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def table_rows(tmp_path_factory):
    """12 phantom cases as NIfTI (paths relative to the CSV), two per patient, labels as 0/1 and as names."""
    root = tmp_path_factory.mktemp("cases")
    rows = []
    for i in range(N_CASES):
        write_phantom(_phantom(i), root / f"ph{i:02d}")
        label = str(i % 2) if i < 6 else ("mvi" if i % 2 else "no_mvi")
        rows.append({"case": f"c{i:02d}", "patient": f"p{i // 2}", "label": label,
                     "image:arterial": f"ph{i:02d}/arterial.nii.gz", "image:CT:portal": f"ph{i:02d}/portal.nii.gz",
                     "tumour": f"ph{i:02d}/labels.nii.gz", "tumour_label": "2", "liver": f"ph{i:02d}/labels.nii.gz"})
    return root, rows


def test_table_cases_crop_as_the_phantom_path(table_rows):
    root, rows = table_rows
    table = read_case_table(_write_csv(root / "cases.csv", rows), "mvi")
    assert table.channels == ("CT:arterial", "CT:portal") and table.phases == ("arterial", "portal")
    assert [r.label for r in table.rows] == [i % 2 for i in range(N_CASES)]
    cases = table_cohort(table, ["CT:arterial", "CT:portal"], SPEC)
    assert [c.case_id for c in cases] == [r["case"] for r in rows] and cases[3].patient == "p1"
    assert cases[3].label("mvi") == 1 and cases[3].grade is None
    with pytest.raises(WsiHccError, match="no grade label"):
        cases[3].label("grade")
    for i in (0, 3):
        reference = phantom_case(_phantom(i), "ref", SPEC)
        crop, expected = cases[i].crop, reference.crop
        assert crop.grid.same_grid(expected.grid)
        for name in expected.channels:
            np.testing.assert_allclose(crop.channels[name], expected.channels[name], atol=1e-4)
        for mask in ("tumour", "ring", "liver"):
            np.testing.assert_array_equal(crop.mask(mask), expected.mask(mask))
        assert cases[i].covariates["diameter_mm"] == pytest.approx(reference.covariates["diameter_mm"])


def test_train_from_cases_cli_writes_the_run_and_predicts(table_rows, tmp_path):
    from wsi_hcc.cli.radiology_models import predict, train

    root, rows = table_rows
    csv_path = _write_csv(root / "cases_train.csv", rows)
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(train, ["--task", "mvi", "--arch", "multiphase", "--cases", str(csv_path), "--epochs", "3",
                                   "--crop-size", "16", "--crop-spacing-mm", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "model" / "card.json").is_file() and (out / "model" / "weights.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["cohort"]["source"] == "case_table" and metrics["cohort"]["cases"] == N_CASES
    assert metrics["cohort"]["patients"] == N_CASES // 2 and metrics["cohort"]["phases"] == ["arterial", "portal"]
    assert metrics["split"]["by"] == "patient" and metrics["held_out"]["cases"] == len(metrics["split"]["test"])
    with open(out / "predictions.csv", newline="") as handle:
        predicted = list(csv.DictReader(handle))
    assert sorted(p["case"] for p in predicted) == [r["case"] for r in rows]
    assert {p["case"]: int(p["label"]) for p in predicted} == {f"c{i:02d}": i % 2 for i in range(N_CASES)}
    # A patient's two cases sit on one side of the split.
    split_of = {p["case"]: p["split"] for p in predicted}
    assert all(split_of[f"c{2 * k:02d}"] == split_of[f"c{2 * k + 1:02d}"] for k in range(N_CASES // 2))
    assert {"train", "test"} == set(split_of.values())
    case = root / "ph01"
    result = runner.invoke(predict, ["--model", str(out / "model"), "--image", f"arterial={case / 'arterial.nii.gz'}",
                                     "--image", f"portal={case / 'portal.nii.gz'}", "--tumour",
                                     str(case / "labels.nii.gz"), "--tumour-label", "2", "--liver",
                                     str(case / "labels.nii.gz"), "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    prediction = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert prediction["random_weights"] is False and sum(prediction["probabilities"].values()) == pytest.approx(1.0)


def _bad(rows, line, **changes):
    """A copy of ``rows`` with the row on CSV line ``line`` (header = line 1) changed."""
    rows = [dict(r) for r in rows]
    rows[line - 2].update(changes)
    return rows


@pytest.mark.parametrize("name, edit, message", [
    ("no_tumour_column", lambda rows: (rows, [c for c in rows[0] if c != "tumour"]), "missing column(s) tumour"),
    ("bad_label", lambda rows: (_bad(rows, 4, label="maybe"), None), "line 4: label 'maybe' is not one of 0, 1"),
    ("missing_file", lambda rows: (_bad(rows, 9, **{"image:arterial": "ph07/gone.nii.gz"}), None),
     "line 9: image:arterial file ph07/gone.nii.gz not found"),
    ("missing_phase", lambda rows: (_bad(rows, 6, **{"image:CT:portal": ""}), None),
     "line 6: image:CT:portal is empty; every case needs every phase"),
    ("empty_tumour", lambda rows: (_bad(rows, 5, tumour_label="7"), None), "line 5: the tumour mask"),
])
def test_bad_tables_are_one_line_errors_before_training(table_rows, tmp_path, name, edit, message):
    from wsi_hcc.cli.radiology_models import train

    root, rows = table_rows
    changed, columns = edit(rows)
    csv_path = _write_csv(root / f"{name}.csv", changed, columns)
    out = tmp_path / "run"
    result = CliRunner().invoke(train, ["--cases", str(csv_path), "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert message in result.output and f"{name}.csv" in result.output
    assert not out.exists()


def test_option_and_model_checks(table_rows, tmp_path):
    from wsi_hcc.cli.radiology_models import train

    root, rows = table_rows
    csv_path = _write_csv(root / "cases_opts.csv", rows)
    runner = CliRunner()
    for args, message in ((["--phantoms", "10", "--cases", str(csv_path)], "not both"),
                          ([], "not neither"),
                          (["--cases", str(csv_path), "--noise-hu", "3"], "--noise-hu applies to --phantoms"),
                          (["--cases", str(csv_path), "--phase", "delayed"], "--phase delayed"),
                          (["--cases", str(csv_path), "--arch", "graph"], "needs covariate column(s) afp_log10"),
                          (["--cases", str(csv_path), "--arch", "fusion"], "pairs CT and MR")):
        result = runner.invoke(train, [*args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and result.output.startswith("error: "), result.output
        assert message in result.output and result.output.count("\n") == 1
    # Grade labels are names (a bare number is ambiguous); --classes maps the CSV's names in order.
    grades = [dict(r, label=("G1", "G2", "G3")[i % 3]) for i, r in enumerate(rows)]
    with pytest.raises(WsiHccError, match="line 2: label 'G1' is not one of well, moderate, poor"):
        read_case_table(_write_csv(root / "g.csv", grades), "grade")
    table = read_case_table(root / "g.csv", "grade", classes=["G1", "G2", "G3"])
    assert [r.label for r in table.rows][:4] == [0, 1, 2, 0] and table.describe()["class_counts"]["poor"] == 4
    with pytest.raises(WsiHccError, match="give 3 distinct names"):
        read_case_table(root / "g.csv", "grade", classes=["G1", "G2"])
    numeric = [dict(r, label=str(i % 3)) for i, r in enumerate(rows)]
    with pytest.raises(WsiHccError, match="label '0' is not one of well"):
        read_case_table(_write_csv(root / "n.csv", numeric), "grade")
    with pytest.raises(WsiHccError, match="fill in column\\(s\\) heterogeneity, satellites"):
        check_table_for_model(read_case_table(csv_path, "mvi"), "ted", ["CT:arterial", "CT:portal"])
    duplicated = rows[:3] + [dict(rows[3], case="c00")]
    with pytest.raises(WsiHccError, match="line 5: case c00 repeats line 2"):
        read_case_table(_write_csv(root / "d.csv", duplicated), "mvi")


def test_real_ct_with_a_drawn_tumour_loads_crops_and_predicts(tmp_path):
    """TotalSegmentator's example CT and its liver (label 5); no real tumour, so a sphere drawn inside the liver."""
    ct_path, seg_path, _ = real_ct_with_drawn_tumour(tmp_path)
    _write_csv(tmp_path / "real.csv", [{"case": "totalseg_example", "label": "0", "image:portal": str(ct_path),
                                         "tumour": "tumour.nii.gz", "liver": str(seg_path), "liver_label": "5"}])
    table = read_case_table(tmp_path / "real.csv", "mvi")
    (case,) = table_cohort(table, ["CT:portal"], SPEC)
    crop = case.crop
    assert crop.tumour.any() and crop.ring.any() and crop.liver.any()
    assert not (crop.ring & ~crop.liver).any()  # the ring is clipped to the liver
    model = untrained_model(TrainConfig(model="single", phases=("portal",), single_phase="portal", crop=SPEC))
    probabilities = predict_proba(model, [crop])
    assert probabilities.shape == (1, 2) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)
