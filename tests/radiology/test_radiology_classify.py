"""MVI / grade classifiers: crops, every model kind, late fusion with a missing modality, Grad-CAM,
bundles, nomogram and the train / predict / explain commands (small phantoms, random or brief training)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology import make_phantom, write_phantom
from wsi_hcc.radiology.cam import cam_energy, grad_cam, write_cam
from wsi_hcc.radiology.classify_bundle import load_classifier, save_classifier
from wsi_hcc.radiology.classify_train import (
    MODEL_KINDS,
    TrainConfig,
    model_inputs,
    predict_proba,
    train_classifier,
    untrained_model,
)
from wsi_hcc.radiology.cohort import phantom_case, simulate_mri
from wsi_hcc.radiology.crops import CropSpec, make_crop
from wsi_hcc.radiology.graph_nomogram import fit_nomogram, nomogram_figure

SPEC = CropSpec(size_vox=16, spacing_mm=3.0)


@pytest.fixture(scope="module")
def cases():
    out = []
    for i in range(4):
        phantom = make_phantom(shape=(28, 72, 72), spacing_mm=(2.5, 2.0, 2.0), phases=("arterial", "portal"),
                               mvi=bool(i % 2), heterogeneity=0.2 + 0.25 * i, lesion_radius_mm=(6.0, 9.0), seed=i)
        out.append(phantom_case(phantom, f"case{i}", SPEC, mri=True))
    return out


def test_crop_is_a_fixed_physical_box_centred_on_the_tumour():
    phantom = make_phantom(shape=(28, 72, 72), spacing_mm=(2.5, 2.0, 2.0), phases=("arterial", "portal"),
                           lesion_radius_mm=(6.0, 8.0), seed=3)
    ref = phantom.phases["portal"]
    # The arterial phase on another grid: cropping happens in physical space.
    from wsi_hcc.radiology import resample_to_spacing

    arterial = resample_to_spacing(phantom.phases["arterial"], (2.0, 1.5, 1.5))
    crop = make_crop({"arterial": arterial, "MR:portal": simulate_mri(ref)}, ref.with_array(phantom.tumour_mask),
                     ref.with_array(phantom.liver_mask), CropSpec(20, 2.0))
    assert crop.shape == (20, 20, 20) and crop.grid.spacing_mm == (2.0, 2.0, 2.0)
    assert set(crop.channels) == {"CT:arterial", "MR:portal"}
    centre_lps = crop.grid.affine_lps @ np.array([9.5, 9.5, 9.5, 1.0])
    hits = np.argwhere(phantom.tumour_mask)
    box_centre = ref.affine_lps @ np.append((hits.min(axis=0) + hits.max(axis=0)) / 2, 1.0)
    np.testing.assert_allclose(centre_lps[:3], box_centre[:3], atol=1e-6)
    regions = crop.regions(outside=True)
    total = sum(m.astype(int) for m in regions.values())
    assert total.max() == 1 and total.min() == 1  # disjoint and covering
    # Ring voxels lie within 6 mm (+ a voxel) of the tumour.
    from scipy.ndimage import distance_transform_edt

    distance = distance_transform_edt(~crop.tumour, sampling=2.0)
    assert distance[crop.ring].max() <= 6.0 + 2.0 * np.sqrt(3)
    # CT scaling: liver ~115 HU portal -> (115-80)/40 in the simulated-MR-free channel.
    ct = crop.channels["CT:arterial"]
    assert -3.0 <= ct.min() and ct.max() <= 3.0
    with pytest.raises(WsiHccError, match="empty"):
        make_crop({"arterial": ref}, ref.with_array(np.zeros(ref.shape, bool)))


def test_late_fusion_skips_a_missing_modality(cases):
    model = untrained_model(TrainConfig(model="fusion", crop=SPEC, seed=1))
    net = model.network
    x, available = model_inputs(model.card, [c.crop for c in cases])
    assert available.all()
    both = net(x, available)
    torch.testing.assert_close(both, (net.branch_logits(x, "CT") + net.branch_logits(x, "MR")) / 2)
    for j, modality in enumerate(("CT", "MR")):
        flags = available.clone()
        flags[:, 1 - j] = False
        alone = net(x, flags)
        torch.testing.assert_close(alone, net.branch_logits(x, modality))
        # The missing branch's inputs do not matter at all.
        scrambled = x.clone()
        index = getattr(net, f"index_{('CT', 'MR')[1 - j]}")[:-2]
        scrambled[:, index] = torch.randn_like(scrambled[:, index]) * 5
        torch.testing.assert_close(net(scrambled, flags), alone)
    # A crop without MR channels is flagged and predicted from CT alone.
    crop = cases[0].crop
    from dataclasses import replace

    no_mr = replace(crop, channels={k: v for k, v in crop.channels.items() if k.startswith("CT:")})
    x1, av1 = model_inputs(model.card, [no_mr])
    assert av1.tolist() == [[True, False]]
    torch.testing.assert_close(net(x1, av1), net.branch_logits(x1, "CT"))
    no_ct = replace(crop, channels={k: v for k, v in crop.channels.items() if k.startswith("MR:")})
    assert model_inputs(model.card, [no_ct])[1].tolist() == [[False, True]]
    neither = replace(crop, channels={})
    with pytest.raises(WsiHccError, match="at least one"):
        model_inputs(model.card, [neither])


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_kind_trains_predicts_explains_and_round_trips(cases, kind, tmp_path):
    task = "grade" if kind == "mcf" else "mvi"
    config = TrainConfig(task=task, model=kind, crop=SPEC, epochs=2, graph_epochs=5, batch_size=2, seed=0)
    model = train_classifier(cases, config)
    probabilities = predict_proba(model, [c.crop for c in cases])
    assert probabilities.shape == (4, len(model.classes))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    cam, class_index = grad_cam(model, cases[1].crop)
    assert cam.shape == cases[1].crop.shape and cam.dtype == np.float32
    assert 0.0 <= cam.min() and cam.max() <= 1.0
    energy = cam_energy(cam, cases[1].crop.regions(outside=True))
    if cam.sum() > 0:
        assert sum(e["fraction"] for e in energy.values()) == pytest.approx(1.0, abs=1e-4)
    # Grad-CAM leaves the model's network without hooks.
    assert not any(m._backward_hooks or m._forward_hooks for m in model.network.modules())
    folder = save_classifier(model, tmp_path / "model")
    card = json.loads((folder / "card.json").read_text())
    assert card["kind"] == kind and card["weights_sha256"] and card["versions"]["torch"]
    loaded = load_classifier(folder)
    np.testing.assert_allclose(predict_proba(loaded, [c.crop for c in cases]), probabilities, rtol=1e-5, atol=1e-6)


def test_bundle_refuses_changed_weights(cases, tmp_path):
    folder = save_classifier(untrained_model(TrainConfig(crop=SPEC)), tmp_path / "m")
    data = bytearray((folder / "weights.safetensors").read_bytes())
    data[-1] ^= 1
    (folder / "weights.safetensors").write_bytes(bytes(data))
    with pytest.raises(WsiHccError, match="checksum"):
        load_classifier(folder)
    with pytest.raises(WsiHccError, match="not a classifier folder"):
        load_classifier(tmp_path)


def test_cam_files_carry_the_crop_geometry(cases, tmp_path):
    from wsi_hcc.radiology import load_volume

    model = untrained_model(TrainConfig(crop=SPEC, seed=2))
    cam, _ = grad_cam(model, cases[1].crop)
    files = write_cam(cam, cases[1].crop, tmp_path, n_slices=2)
    written = load_volume(tmp_path / files["cam"])
    assert written.same_grid(cases[1].crop.grid)
    np.testing.assert_allclose(written.array, cam, atol=1e-6)
    assert files["png"] and all((tmp_path / f).read_bytes()[:4] == b"\x89PNG" for f in files["png"])


def test_cam_energy_fractions_and_means():
    cam = np.zeros((4, 4, 4), np.float32)
    cam[0] = 1.0
    cam[1, 0, 0] = 2.0
    regions = {"a": np.zeros((4, 4, 4), bool), "b": np.zeros((4, 4, 4), bool)}
    regions["a"][0] = True
    regions["b"][1:] = True
    energy = cam_energy(cam, regions)
    assert energy["a"]["fraction"] == pytest.approx(16 / 18)
    assert energy["b"]["mean_per_voxel"] == pytest.approx(2 / 48)


def test_nomogram_recovers_a_logistic_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)) * [1.0, 10.0] + [0.0, 50.0]
    logit = 1.5 * x[:, 0] - 0.1 * (x[:, 1] - 50)
    y = rng.random(400) < 1 / (1 + np.exp(-logit))
    nomogram = fit_nomogram(x, y, ["score", "size"], c=1e4)
    assert nomogram.coef[0] == pytest.approx(1.5, rel=0.3) and nomogram.coef[1] == pytest.approx(-0.1, rel=0.4)
    points = nomogram.points(x)
    assert points.min() >= -1e-9 and points.max() <= 100 + 1e-9
    p_points = 1 / (1 + np.exp(-nomogram.log_odds_of_points(points.sum(axis=1))))
    np.testing.assert_allclose(p_points, nomogram.probability(x), rtol=1e-9)
    from wsi_hcc.viz.figures import figure_png

    assert figure_png(nomogram_figure(nomogram))[:4] == b"\x89PNG"


def test_cli_help_predict_explain_and_errors(tmp_path):
    from wsi_hcc.cli.radiology_models import explain, predict, train

    runner = CliRunner()
    for command in (train, predict, explain):
        result = runner.invoke(command, ["--help"])
        assert result.exit_code == 0 and "Examples:" in result.output
    phantom = write_phantom(make_phantom(shape=(28, 72, 72), spacing_mm=(2.5, 2.0, 2.0),
                                         phases=("arterial", "portal"), mvi=True, seed=4), tmp_path / "ph")
    model = untrained_model(TrainConfig(crop=SPEC, seed=0))
    save_classifier(model, tmp_path / "model")
    common = ["--image", f"arterial={phantom / 'arterial.nii.gz'}", "--image", f"portal={phantom / 'portal.nii.gz'}",
              "--tumour", str(phantom / "labels.nii.gz"), "--tumour-label", "2",
              "--liver", str(phantom / "labels.nii.gz")]
    result = runner.invoke(predict, ["--model", str(tmp_path / "model"), *common, "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    prediction = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert set(prediction["probabilities"]) == {"no_mvi", "mvi"} and prediction["random_weights"] is False
    assert prediction["versions"]["monai"] and prediction["inputs"]["tumour"]
    result = runner.invoke(explain, ["--arch", "multiphase", *common, "--out", str(tmp_path / "cam")])
    assert result.exit_code == 0, result.output
    energy = json.loads((tmp_path / "cam" / "energy.json").read_text())
    assert set(energy["energy"]) == {"tumour", "ring", "liver", "outside"} and energy["random_weights"]
    assert (tmp_path / "cam" / "cam.nii.gz").is_file() and energy["files"]["png"]
    # One-line errors.
    for args, message in (
            (["--model", str(tmp_path / "model"), "--image", "arterial", "--tumour", str(phantom / "labels.nii.gz"),
              "--out", str(tmp_path / "x")], "NAME=VALUE"),
            (["--model", str(tmp_path / "model"), "--image", f"arterial={phantom / 'arterial.nii.gz'}",
              "--tumour", str(phantom / "labels.nii.gz"), "--out", str(tmp_path / "x")], "needs --image"),
            (["--model", str(tmp_path / "model"), *common[:4], "--tumour", str(phantom / "labels.nii.gz"),
              "--tumour-label", "9", "--out", str(tmp_path / "x")], "empty"),
            (["--model", str(tmp_path), *common, "--out", str(tmp_path / "x")], "not a classifier folder")):
        result = runner.invoke(predict, args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and message in result.output and result.output.count("\n") == 1
    result = runner.invoke(predict, [*common, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "give --model (a model folder" in result.output
    result = runner.invoke(predict, ["--model", str(tmp_path / "gone"), *common, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "gone: no such model folder" in result.output
    # the old spellings, for one release: --weights DIR, and --model KIND for random weights
    result = runner.invoke(predict, ["--weights", str(tmp_path / "model"), *common, "--out", str(tmp_path / "old")])
    assert result.exit_code == 0 and "--weights is deprecated and will be removed; use --model" in result.stderr
    result = runner.invoke(explain, ["--model", "multiphase", *common, "--out", str(tmp_path / "old_cam")])
    assert result.exit_code == 0, result.output
    assert "--model multiphase is deprecated and will be removed; use --arch multiphase" in result.stderr
    assert json.loads((tmp_path / "old_cam" / "energy.json").read_text())["inputs"]["weights"] is None
    result = runner.invoke(explain, ["--model", "multiphase", "--arch", "single", *common,
                                     "--out", str(tmp_path / "y")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "give --arch only" in result.output
