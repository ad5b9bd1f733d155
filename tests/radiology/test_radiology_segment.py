"""Radiology segmentation: metrics against MONAI, networks, fold ensembles, weights, clean-up, prompts, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import RecordingProgress

from wsi_hcc.cli.radiology_segment import COMMANDS, segment
from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology import load_volume, make_phantom, save_nifti, write_phantom
from wsi_hcc.radiology.seg_metrics import case_metrics, dice, global_dice, hd95_mm, summarise_cases, volume_similarity
from wsi_hcc.radiology.segment_data import phantom_cases, three_classes
from wsi_hcc.radiology.segment_infer import (
    clean_labels,
    liver_roi,
    network_probabilities,
    predict_probabilities,
    segment_volume,
)
from wsi_hcc.radiology.segment_models import (
    MODEL_NAMES,
    ConvLSTM3dCell,
    CrossPhaseAttentionNet,
    SegConfig,
    build_network,
    new_model,
)
from wsi_hcc.radiology.segment_train import fold_split, train_model
from wsi_hcc.radiology.semi_auto import edit_mask, prompt_segment, remeasure
from wsi_hcc.radiology.weights import load_seg_model, save_seg_model

PHASES = ("arterial", "portal", "delayed")
TINY = dict(patch_size=(16, 32, 32), iterations=2, batch_size=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two torch threads on two shared cores spin against each other: one is several times faster.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _ellipsoid(shape, centre, radii):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return (((grid - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1) <= 1.0


# --- metrics -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mask_pairs():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(4):
        shape = (24, 40, 36)
        truth = _ellipsoid(shape, rng.uniform(8, 16, 3), rng.uniform(3, 8, 3))
        pred = _ellipsoid(shape, rng.uniform(8, 16, 3), rng.uniform(3, 8, 3)) | (rng.random(shape) > 0.995)
        pairs.append((pred, truth))
    # A mask touching the array border, and an anisotropic case.
    pairs.append((_ellipsoid((20, 30, 30), (0, 15, 15), (6, 8, 8)), _ellipsoid((20, 30, 30), (2, 14, 16), (6, 9, 7))))
    return pairs


def _monai_onehot(mask):
    return torch.as_tensor(np.stack([~mask, mask])[None].astype(np.float32))


# MONAI 1.6 warns about its own internal use of a deprecated argument inside the metric.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")
def test_dice_and_hd95_equal_monai(mask_pairs):
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    for spacing in ((1.0, 1.0, 1.0), (3.0, 0.8, 0.7)):
        for pred, truth in mask_pairs:
            dice_metric = DiceMetric(include_background=False, reduction="none")
            hd_metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
            expected_dice = float(dice_metric(_monai_onehot(pred), _monai_onehot(truth))[0, 0])
            expected_hd = float(hd_metric(_monai_onehot(pred), _monai_onehot(truth), spacing=list(spacing))[0, 0])
            assert dice(pred, truth) == pytest.approx(expected_dice, abs=1e-6)
            assert hd95_mm(pred, truth, spacing) == pytest.approx(expected_hd, abs=1e-3)
            assert hd95_mm(pred, truth, spacing) > 0


def test_global_dice_pools_cases_and_volume_similarity(mask_pairs):
    inter = sum(int((p & t).sum()) for p, t in mask_pairs)
    sizes = sum(int(p.sum() + t.sum()) for p, t in mask_pairs)
    assert global_dice(mask_pairs) == pytest.approx(2 * inter / sizes)
    # Global Dice weighs large cases more, so it differs from the mean of per-case Dice.
    assert global_dice(mask_pairs) != pytest.approx(np.mean([dice(p, t) for p, t in mask_pairs]), abs=1e-4)
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2] = True  # 32 voxels
    b[:1] = True  # 16 voxels
    assert volume_similarity(a, b) == pytest.approx(1 - 16 / 48)
    assert dice(a, b) == pytest.approx(2 * 16 / 48)
    empty = np.zeros_like(a)
    assert dice(empty, empty) == 1.0 and volume_similarity(empty, empty) == 1.0
    assert np.isnan(hd95_mm(a, empty, (1, 1, 1)))


def test_case_metrics_count_tumour_as_liver_and_summarise():
    truth = np.zeros((10, 20, 20), np.uint8)
    truth[2:8, 4:16, 4:16] = 1
    truth[4:6, 8:12, 8:12] = 2
    pred = truth.copy()
    pred[4:6, 8:12, 8:10] = 1  # half the tumour called liver
    metrics = case_metrics(pred, truth, (2.0, 1.0, 1.0))
    assert metrics["liver"]["dice"] == 1.0
    assert metrics["tumour"]["dice"] == pytest.approx(2 * 16 / 48)
    assert metrics["tumour"]["volume_ml_truth"] == pytest.approx(32 * 2.0 / 1000)
    summary = summarise_cases([metrics, case_metrics(truth, truth, (2.0, 1.0, 1.0))])
    assert summary["tumour"]["dice_global"] == pytest.approx(2 * (16 + 32) / (48 + 64))
    assert summary["tumour"]["cases"] == 2


# --- networks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_network_maps_phases_to_class_logits(name):
    torch.manual_seed(0)
    net = build_network(name, 3, 3)
    out = net(torch.randn(1, 3, 16, 32, 32))
    assert out.shape == (1, 3, 16, 32, 32)
    assert torch.isfinite(out).all()


def test_cross_phase_attention_weights_sum_to_one_over_phases():
    net = CrossPhaseAttentionNet(3, 2)
    net(torch.randn(2, 3, 8, 16, 16))
    weights = net.last_attention
    assert weights.shape == (2, 3, 8, 16, 16)
    assert torch.allclose(weights.sum(1), torch.ones(2, 8, 16, 16), atol=1e-5)


def test_convlstm_cell_carries_state_across_phases():
    cell = ConvLSTM3dCell(4, 6)
    x = torch.randn(1, 4, 4, 8, 8)
    h1, c1 = cell(x)
    h2, c2 = cell(x, (h1, c1))
    assert h1.shape == c1.shape == (1, 6, 4, 8, 8)
    assert not torch.allclose(h1, h2)  # the second step sees the first step's memory
    assert torch.all(h2.abs() <= 1)


def test_patch_size_must_fit_the_network():
    with pytest.raises(ValueError, match="multiples of 8"):
        SegConfig(model="unet", patch_size=(20, 32, 32))


@pytest.fixture(scope="module")
def tiny_cases():
    return phantom_cases(5, seed=0, shape=(24, 48, 48))


@pytest.mark.parametrize("model,pipeline", [("cross_phase", "two_stage"), ("convlstm", "single"),
                                            ("cross_phase", "single")])
def test_model_options_train_and_the_loss_falls(tiny_cases, model, pipeline):
    config = SegConfig(model=model, pipeline=pipeline, patch_size=(16, 32, 32), iterations=12, batch_size=2,
                       lr=5e-3, folds=1)
    progress = RecordingProgress()
    trained = train_model(tiny_cases, config, progress=progress)
    assert len(progress.of("steps")) == config.iterations * (2 if pipeline == "two_stage" else 1)
    assert progress.of("message") and progress.of("item") == [("fold 1", 0, 1)]
    assert len(trained.members) == 1
    keys = ("final_loss_tumour",) if pipeline == "two_stage" else ("final_loss",)
    assert all(np.isfinite(trained.info["folds"][0][k]) for k in keys)
    probs = predict_probabilities(trained, tiny_cases[0].image, tiny_cases[0].spacing_mm)
    assert probs.shape == (3,) + tiny_cases[0].labels.shape
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    # Progress lines report the running loss; it falls from the first report to the last.
    reported = [float(line.rsplit("loss ", 1)[1]) for (line,) in progress.of("message") if "loss" in line]
    assert reported[-1] < reported[0]


# --- folds, ensembles, weights -------------------------------------------------------------------

def test_folds_hold_out_every_case_once():
    parts = fold_split(11, 5, seed=3)
    assert len(parts) == 5
    assert sorted(np.concatenate(parts).tolist()) == list(range(11))
    with pytest.raises(ValueError):
        fold_split(3, 5)


@pytest.fixture(scope="module")
def five_fold_model(tiny_cases):
    return train_model(tiny_cases, SegConfig(folds=5, **TINY))


def test_k_fold_training_ensembles_every_fold(five_fold_model, tiny_cases):
    model = five_fold_model
    assert len(model.members) == 5
    held = [row["case"] for fold in model.info["folds"] for row in fold["held_out"]]
    assert sorted(held) == sorted(c.name for c in tiny_cases)
    for fold in model.info["folds"]:
        assert not set(fold["train_cases"]) & {row["case"] for row in fold["held_out"]}
    image = tiny_cases[0].image
    ensemble = predict_probabilities(model, image, tiny_cases[0].spacing_mm)
    each = [network_probabilities([m["main"]], image, model.config.patch_size) for m in model.members]
    np.testing.assert_allclose(ensemble, np.mean(each, axis=0), atol=1e-5)
    assert not np.allclose(each[0], each[1], atol=1e-3)


def test_weights_round_trip_and_refuse_tampering(five_fold_model, tiny_cases, tmp_path):
    folder = save_seg_model(five_fold_model, tmp_path / "model")
    card = json.loads((folder / "card.json").read_text())
    assert card["folds"] == 5 and card["phases"] == list(PHASES) and card["in_channels"] == 3
    assert card["classes"] == {"0": "background", "1": "liver", "2": "tumour"}
    assert card["config"]["patch_size"] == [16, 32, 32] and "monai" in card["versions"]
    image, spacing = tiny_cases[1].image, tiny_cases[1].spacing_mm
    expected = predict_probabilities(five_fold_model, image, spacing)
    for path in (folder, folder / "weights.safetensors"):
        loaded = load_seg_model(path)
        np.testing.assert_allclose(predict_probabilities(loaded, image, spacing), expected, atol=1e-6)
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(WsiHccError, match="checksum"):
        load_seg_model(folder)
    with pytest.raises(WsiHccError, match="not a segmentation model"):
        load_seg_model(tmp_path)


def test_two_stage_weights_round_trip(tmp_path):
    model = new_model(SegConfig(model="cross_phase", pipeline="two_stage", patch_size=(16, 32, 32)), members=2)
    loaded = load_seg_model(save_seg_model(model, tmp_path / "m"))
    assert [sorted(m) for m in loaded.members] == [["liver", "tumour"]] * 2
    for a, b in zip(model.members[1]["tumour"].parameters(), loaded.members[1]["tumour"].parameters()):
        assert torch.equal(a, b)


# --- clean-up and geometry -----------------------------------------------------------------------

def test_clean_up_keeps_tumour_inside_the_largest_liver_component():
    labels = np.zeros((20, 40, 40), np.uint8)
    labels[2:18, 2:25, 2:25] = 1
    labels[8:12, 8:14, 8:14] = 2       # tumour in the liver: kept
    labels[5:8, 30:36, 30:36] = 2      # tumour floating outside: removed
    labels[14:17, 32:38, 32:38] = 1    # a second, smaller liver piece: removed
    labels[3, 20, 20] = 2              # a one-voxel speck: becomes liver
    cleaned = clean_labels(labels, (1.0, 1.0, 1.0), min_tumour_mm3=5)
    assert cleaned[10, 10, 10] == 2 and (cleaned == 2).sum() == 4 * 6 * 6
    assert cleaned[6, 32, 32] == 0 and cleaned[15, 34, 34] == 0
    assert cleaned[3, 20, 20] == 1
    roi = liver_roi(cleaned > 0, (1.0, 2.0, 2.0), margin_mm=4.0)
    assert roi == (slice(0, 20), slice(0, 27), slice(0, 27))  # 4 / 2 = 2 voxels in-plane, clipped at 0 and 20


def test_segment_volume_returns_labels_on_the_input_grid(five_fold_model):
    phantom = make_phantom(shape=(20, 40, 44), spacing_mm=(3.5, 3.0, 3.0), phases=PHASES, seed=7)
    result = segment_volume(five_fold_model, phantom.phases)
    assert result.labels.same_grid(phantom.phases["arterial"])
    assert set(np.unique(result.labels.array)) <= {0, 1, 2}
    assert result.info["work_spacing_mm"] == [3.0, 2.5, 2.5]
    with pytest.raises(WsiHccError, match="missing phase"):
        segment_volume(five_fold_model, {"arterial": phantom.phases["arterial"]})


def test_three_classes_merges_vessels_into_liver_and_satellites_into_tumour():
    assert three_classes(np.array([0, 1, 2, 3, 4])).tolist() == [0, 1, 2, 1, 2]


# --- semi-automatic mode -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lesion_phantom():
    return make_phantom(shape=(32, 64, 64), spacing_mm=(3.0, 2.5, 2.5), phases=PHASES, seed=1)


def test_point_prompt_grows_the_lesion(lesion_phantom):
    truth = lesion_phantom.tumour_mask
    centre = np.argwhere(truth).mean(0).round().astype(int)
    result = prompt_segment(lesion_phantom.phases, point=centre)
    assert result.method == "region_growing"
    assert result.mask.same_grid(lesion_phantom.phases["arterial"])
    assert dice(result.mask.array, truth) > 0.8
    assert result.measurement.volume_ml == pytest.approx(truth.sum() * 3 * 2.5 * 2.5 / 1000, rel=0.25)


def test_box_prompt_stays_inside_the_box(lesion_phantom):
    where = np.argwhere(lesion_phantom.tumour_mask)
    lo, hi = where.min(0), where.max(0) + 1
    hi[2] = (lo[2] + hi[2]) // 2 + 1  # cut the box through the lesion
    result = prompt_segment(lesion_phantom.phases, box=(tuple(lo), tuple(hi)))
    assert result.mask.array.any()
    assert not result.mask.array[:, :, hi[2]:].any()
    with pytest.raises(WsiHccError, match="outside"):
        prompt_segment(lesion_phantom.phases, point=(0, 0, 999))


def test_region_growing_that_fills_the_crop_is_flagged_and_warned(tmp_path, lesion_phantom):
    """On a featureless phase the region grows to every face of the crop; the lesion itself does not."""
    centre = np.argwhere(lesion_phantom.tumour_mask).mean(0).round().astype(int)
    assert prompt_segment(lesion_phantom.phases, point=centre).info["filled_crop"] is False
    arterial = lesion_phantom.phases["arterial"]
    flat = arterial.with_array(np.random.default_rng(0).normal(60, 2, arterial.shape).astype(np.float32))
    assert prompt_segment({"arterial": flat}, point=centre, crop_mm=40).info["filled_crop"] is True
    save_nifti(flat, tmp_path / "flat.nii.gz")
    result = CliRunner().invoke(segment, ["prompt", "--image", f"arterial={tmp_path / 'flat.nii.gz'}", "--point",
                                          *map(str, centre), "--crop-mm", "40", "--out", str(tmp_path / "lesion")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("warning: region growing from the point filled the whole crop: it leaked past "
                                    "the lesion on the arterial phase; give a tighter --box")
    assert (tmp_path / "lesion" / "lesion.nii.gz").is_file()


def test_model_prompt_uses_the_tumour_network(five_fold_model, lesion_phantom):
    centre = np.argwhere(lesion_phantom.tumour_mask).mean(0).round().astype(int)
    result = prompt_segment(lesion_phantom.phases, point=centre, model=five_fold_model)
    # An untrained model finds nothing or something; either way the mask is on the full grid and measured.
    assert result.method in ("model", "region_growing")
    assert result.mask.shape == lesion_phantom.tumour_mask.shape
    assert result.measurement.voxels == int(result.mask.array.sum())


def test_remeasure_sphere_and_edited_slabs():
    spacing = (2.0, 1.0, 1.0)
    sphere = _ellipsoid((30, 60, 60), (15, 30, 30), (5, 10, 10))  # radius 10 mm
    m = remeasure(sphere, spacing)
    assert m.volume_ml == pytest.approx(4 / 3 * np.pi * 10 ** 3 / 1000, rel=0.05)
    assert m.max_diameter_mm == pytest.approx(20.0, abs=1.0)
    assert m.max_axial_diameter_mm == pytest.approx(20.0, abs=1.0)
    slab = np.zeros_like(sphere)
    slab[15:17, 10:50, 10:50] = True
    added = remeasure(edit_mask(sphere, add=slab), spacing)
    removed = remeasure(edit_mask(sphere, remove=slab), spacing)
    assert added.voxels == int((sphere | slab).sum()) > m.voxels
    assert removed.voxels == int((sphere & ~slab).sum()) < m.voxels
    assert added.max_axial_diameter_mm > 50  # the slab's diagonal
    assert remeasure(np.zeros((3, 3, 3)), spacing).volume_ml == 0.0


# --- CLI -----------------------------------------------------------------------------------------

def test_cli_help_has_examples_and_commands_are_exposed():
    assert COMMANDS == [segment]
    runner = CliRunner()
    for args in ([], ["train"], ["predict"], ["prompt"], ["measure"]):
        result = runner.invoke(segment, args + ["--help"])
        assert result.exit_code == 0 and "Examples:" in result.output


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segph") / "case"
    write_phantom(make_phantom(shape=(24, 52, 52), spacing_mm=(3.0, 2.6, 2.6), phases=PHASES, seed=21), folder)
    return folder


def _images(folder):
    return [arg for p in PHASES for arg in ("--image", f"{p}={folder / f'{p}.nii.gz'}")]


def test_cli_train_predict_prompt_measure(tmp_path, phantom_dir):
    runner = CliRunner()
    result = runner.invoke(segment, ["train", "--out", str(tmp_path / "run"), "--phantoms", "2", "--data",
                                     str(phantom_dir), "--folds", "3", "--iterations", "2", "--patch", "16", "32", "32",
                                     "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "3 model(s) trained" in result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["folds"]) == 3 and metrics["held_out_summary"]["tumour"]["cases"] == 3
    result = runner.invoke(segment, ["predict", "--model", str(tmp_path / "run" / "model"), *_images(phantom_dir),
                                     "--truth", str(phantom_dir / "labels.nii.gz"), "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    labels = load_volume(tmp_path / "pred" / "labels.nii.gz")
    assert labels.same_grid(load_volume(phantom_dir / "arterial.nii.gz"))
    scored = json.loads((tmp_path / "pred" / "metrics.json").read_text())["metrics"]
    assert set(scored) == {"liver", "tumour"} and 0 <= scored["tumour"]["dice"] <= 1
    assert not list(tmp_path.glob(".*partial"))

    truth = load_volume(phantom_dir / "labels.nii.gz")
    centre = np.argwhere(truth.array == 2).mean(0).round().astype(int)
    result = runner.invoke(segment, ["prompt", *_images(phantom_dir), "--point", *map(str, centre),
                                     "--out", str(tmp_path / "lesion")])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    lesion = load_volume(tmp_path / "lesion" / "lesion.nii.gz")
    measured = json.loads((tmp_path / "lesion" / "measurement.json").read_text())["measurement"]
    # Edit: paint a slab onto the lesion, save, and re-measure: the volume grows by the new voxels.
    edited = lesion.array.astype(bool).copy()
    slab = np.zeros_like(edited)
    slab[centre[0], 5:45, 5:45] = True
    save_nifti(lesion.with_array(edit_mask(edited, add=slab).astype(np.uint8)), tmp_path / "edited.nii.gz")
    result = runner.invoke(segment, ["measure", "--mask", str(tmp_path / "edited.nii.gz"), "--out",
                                     str(tmp_path / "edited.json")])
    assert result.exit_code == 0, result.output
    after = json.loads((tmp_path / "edited.json").read_text())["measurement"]
    assert after["voxels"] == measured["voxels"] + int((slab & ~edited).sum())
    assert after["volume_ml"] > measured["volume_ml"]


def test_cli_errors_are_one_line(tmp_path, phantom_dir):
    runner = CliRunner()
    cases = [
        (["predict", "--image", "arterial", "--out", str(tmp_path / "p")], "PHASE=PATH"),
        (["predict", "--image", f"arterial={phantom_dir / 'arterial.nii.gz'}", "--out", str(tmp_path / "p")],
         "missing phase"),
        (["predict", "--model", str(phantom_dir), *_images(phantom_dir), "--out", str(tmp_path / "p")],
         "not a segmentation model"),
        (["prompt", *_images(phantom_dir), "--out", str(tmp_path / "l")], "point"),
        (["train", "--out", str(tmp_path / "t"), "--phantoms", "2", "--folds", "5"], "fold"),
        (["train", "--out", str(tmp_path / "t"), "--phantoms", "2", "--patch", "10", "32", "32"], "multiples"),
    ]
    for args, needle in cases:
        result = runner.invoke(segment, args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and needle in lines[0], result.output


def test_cli_predict_checks_the_phases_before_loading_volumes_or_weights(tmp_path):
    """The phase check once came after ~20 s of loading; here neither the images nor the (damaged) weights
    could load, so the phase error proves nothing was loaded first."""
    from wsi_hcc.radiology.weights import CARD_FORMAT
    from wsi_hcc.utils.checked_weights import save_checked

    # A card without networks (building one takes seconds) and weights that do not load.
    folder = save_checked(tmp_path / "model", {}, {"format": CARD_FORMAT, "config": SegConfig().to_json()})
    (folder / "weights.safetensors").write_bytes(b"damaged")
    absent = [arg for p in PHASES for arg in ("--image", f"{p}={tmp_path / f'{p}.nii.gz'}")]
    cases = [
        (absent[:2], "error: missing phase(s) ['portal', 'delayed']: the model needs ['arterial', 'portal', "
                     "'delayed']; give --image NAME=PATH for each (given: arterial)"),
        ([*absent, "--register-to", "venous"], "error: --register-to 'venous': not one of the phases ['arterial', "
                                               "'delayed', 'portal']"),
        ([*absent, "--reference", "venous"], "error: --reference 'venous': not one of the phases"),
    ]
    for args, expected in cases:
        result = CliRunner().invoke(segment, ["predict", "--model", str(folder), *args, "--out", str(tmp_path / "p")])
        assert result.exit_code == 2 and result.output.startswith(expected), result.output
    result = CliRunner().invoke(segment, ["predict", "--model", str(folder), *absent, "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "arterial.nii.gz" in result.output  # all phases there: the images load next


@pytest.mark.slow
def test_cli_predict_registers_moved_phases_first(tmp_path):
    folder = tmp_path / "moved"
    write_phantom(make_phantom(shape=(24, 52, 52), spacing_mm=(3.0, 2.6, 2.6), phases=PHASES, motion_mm=4.0,
                               noise_hu=4.0, seed=5), folder)
    result = CliRunner().invoke(segment, ["predict", *_images(folder), "--register-to", "portal",
                                          "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "pred" / "segment.json").read_text())
    assert sorted(record["registration"]) == ["arterial", "delayed"]
    shifts = [np.linalg.norm(r["translation_mm"]) for r in record["registration"].values()]
    assert all(2.0 < s < 6.0 for s in shifts), shifts
    assert record["random_weights"] is True
