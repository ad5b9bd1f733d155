"""Whole-liver survival (region box -> 3D encoder -> Cox head): boxes, training, folds by patient, model folders,
the ``radiology survival`` commands, and the slow phantom proof (liver beats tumour-only)."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsi_hcc.errors import WsiHccError
from wsi_hcc.pipelines.image_survival import (
    ImageSurvivalConfig,
    fit_image_survival,
    image_log_hazard,
    load_image_survival,
    save_image_survival,
)
from wsi_hcc.radiology import make_phantom, save_nifti
from wsi_hcc.radiology.organ_box import region_box
from wsi_hcc.radiology.survival_phantoms import liver_survival_cohort
from wsi_hcc.survival.pipeline import event_folds

SMALL = {"shape": (28, 72, 72), "spacing_mm": (2.5, 2.0, 2.0), "lesion_radius_mm": (5.0, 8.0)}


def test_region_box_is_a_cube_around_the_mask_with_the_outside_zeroed():
    phantom = make_phantom(shape=(24, 64, 64), spacing_mm=(2.5, 2.0, 2.0), phases=("portal",), seed=1)
    ref = phantom.phases["portal"]
    box = region_box({"portal": ref}, ref.with_array(phantom.liver_mask), size_vox=16)
    assert box.mask.shape == (16, 16, 16) and set(box.channels) == {"CT:portal"}
    hits = np.argwhere(phantom.liver_mask)
    longest = float(((hits.max(axis=0) - hits.min(axis=0) + 1) * np.asarray(ref.spacing_mm)).max())
    assert box.grid.spacing_mm == pytest.approx((longest / 16,) * 3)
    assert box.mask.mean() > 0.2  # the liver fills much of its own box
    assert np.all(box.channels["CT:portal"][~box.mask] == 0.0)
    # CT scaled like the crops: portal liver (~115 HU) near (115 - 80) / 40.
    assert np.median(box.channels["CT:portal"][box.mask]) == pytest.approx(35 / 40, abs=0.35)
    assert box.stack(["CT:portal", "CT:arterial"]).shape == (3, 16, 16, 16)
    with pytest.raises(WsiHccError, match="empty"):
        region_box({"portal": ref}, ref.with_array(np.zeros(ref.shape, bool)))


def test_phantom_hazard_follows_the_liver_texture_not_the_tumour():
    from wsi_hcc.survival import concordance_index

    patients = liver_survival_cohort(24, seed=2, size_vox=16, **SMALL)
    time = np.array([p.time for p in patients])
    event = np.array([p.event for p in patients])
    assert 0.4 < event.mean() < 0.95
    fibrosis = np.array([p.truth["fibrosis"] for p in patients])
    assert concordance_index(time, event, fibrosis) > 0.7
    # the texture is there: the liver's voxel SD grows with fibrosis
    sd = np.array([p.liver.channels["CT:portal"][p.liver.mask].std() for p in patients])
    assert np.corrcoef(sd, fibrosis)[0, 1] > 0.8


def test_fit_predict_round_trip_and_patient_folds(tmp_path):
    patients = liver_survival_cohort(10, seed=4, size_vox=16, **SMALL)
    boxes = [p.liver for p in patients]
    time, event = np.array([p.time for p in patients]), np.array([p.event for p in patients])
    config = ImageSurvivalConfig(size_vox=16, epochs=3)
    model = fit_image_survival(boxes, time, event, config)
    risk = image_log_hazard(model, boxes)
    assert risk.shape == (10,) and np.isfinite(risk).all()
    save_image_survival(model, tmp_path / "m")
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["region"] == "liver" and card["weights_sha256"] and card["training"]["patients"] == 10
    np.testing.assert_allclose(image_log_hazard(load_image_survival(tmp_path / "m"), boxes), risk, rtol=1e-5)
    with pytest.raises(WsiHccError, match="size_vox"):
        image_log_hazard(model, [region_box({"portal": make_phantom(shape=(24, 64, 64), phases=("portal",)).phases[
            "portal"]}, patients[0].liver.grid.with_array(np.ones((16,) * 3, bool)), size_vox=8)])
    # a patient's scans stay in one fold
    ids = ["a", "a", "b", "b", "c", "c", "d", "d", "e", "e"]
    events = np.array([1, 0] * 5)
    for train, test in event_folds(events, 3, 0, groups=ids):
        assert not {ids[i] for i in train} & {ids[i] for i in test}
    with pytest.raises(WsiHccError, match="lower --folds"):
        event_folds(events, 6, 0, groups=ids)


def test_cli_trains_on_a_csv_and_predicts(tmp_path):
    from wsi_hcc.cli.radiology_survival import predict, train

    rows = []
    for i in range(8):
        phantom = make_phantom(shape=(24, 64, 64), spacing_mm=(2.5, 2.0, 2.0), phases=("portal",), seed=10 + i)
        ref = phantom.phases["portal"]
        save_nifti(ref, tmp_path / f"ct{i}.nii.gz")
        save_nifti(phantom.labels, tmp_path / f"seg{i}.nii.gz")
        rows.append({"patient": f"p{i // 2}", "time": str(1.0 + i), "event": str(i % 2),
                     "image:portal": f"ct{i}.nii.gz", "liver": f"seg{i}.nii.gz", "liver_label": "1;2;3;4"})
    with (tmp_path / "scans.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    runner = CliRunner()
    result = runner.invoke(train, ["--cases", str(tmp_path / "scans.csv"), "--folds", "2", "--epochs", "2",
                                   "--box-size", "16", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "2-fold CV by patient" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["patients"] == 8 and len(metrics["cross_validation"]["folds"]) == 2
    lines = (tmp_path / "run" / "risks.csv").read_text().splitlines()
    assert lines[0] == "patient,time,event,risk,fold" and len(lines) == 9
    result = runner.invoke(predict, ["--model", str(tmp_path / "run" / "model"), "--image",
                                     f"portal={tmp_path / 'ct0.nii.gz'}", "--liver", str(tmp_path / "seg0.nii.gz"),
                                     "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    assert np.isfinite(json.loads((tmp_path / "pred" / "prediction.json").read_text())["log_hazard"])
    # the liver from a segmentation model instead of a mask (random weights, seeded: a non-empty liver)
    from wsi_hcc.radiology.segment_models import SegConfig, new_model
    from wsi_hcc.radiology.weights import save_seg_model

    save_seg_model(new_model(SegConfig(phases=("portal",), patch_size=(16, 32, 32)), seed=0), tmp_path / "seg")
    image = ["--model", str(tmp_path / "run" / "model"), "--image", f"portal={tmp_path / 'ct0.nii.gz'}"]
    result = runner.invoke(predict, [*image, "--segment-model", str(tmp_path / "seg"), "--out", str(tmp_path / "ps")])
    assert result.exit_code == 0, result.output
    segmented = json.loads((tmp_path / "ps" / "prediction.json").read_text())
    assert segmented["region_voxels"] > 0 and "segmented by" in segmented["inputs"]["mask"]
    result = runner.invoke(predict, [*image, "--out", str(tmp_path / "none")])
    assert result.exit_code == 2 and "either --liver MASK or --segment-model" in result.output
    # one-line errors
    bad = dict(rows[0], event="2")
    with (tmp_path / "bad.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(bad))
        writer.writeheader()
        writer.writerow(bad)
    for args, message in ((["--cases", str(tmp_path / "bad.csv")], "bad.csv line 2: event is '2'"),
                          (["--phantoms", "8", "--cases", str(tmp_path / "bad.csv")], "not both"),
                          ([], "not neither")):
        result = runner.invoke(train, [*args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1, result.output


@pytest.mark.slow
def test_whole_liver_beats_tumour_only_on_phantoms_whose_hazard_lives_in_the_liver():
    torch.set_num_threads(2)
    patients = liver_survival_cohort(45, seed=3)
    time, event = np.array([p.time for p in patients]), np.array([p.event for p in patients])
    ids = [p.patient for p in patients]
    from wsi_hcc.pipelines.image_survival import cross_validate_images

    scores = {}
    for region in ("liver", "tumour"):
        config = ImageSurvivalConfig(region=region, folds=3, epochs=120)
        metrics, _, _ = cross_validate_images([getattr(p, region) for p in patients], time, event, ids, config)
        scores[region] = metrics["fold_mean_c_index"]
    print(f"\nheld-out C-index (mean of 3 patient folds): liver {scores['liver']:.3f}, tumour {scores['tumour']:.3f}")
    assert scores["liver"] >= 0.7
    assert scores["liver"] >= scores["tumour"] + 0.1
