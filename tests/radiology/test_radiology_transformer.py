"""The ``transformer`` kind (MONAI ViT on region-aware tokens): shapes, crop checks, region pooling, and
predict / explain on a real CT (TotalSegmentator's example, liver label 5) with a drawn tumour."""

import json

import pytest
import torch
from click.testing import CliRunner
from real_ct import real_ct_with_drawn_tumour

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology import load_volume
from wsi_hcc.radiology.classify_bundle import save_classifier
from wsi_hcc.radiology.classify_train import TrainConfig, untrained_model
from wsi_hcc.radiology.crops import CropSpec
from wsi_hcc.radiology.transformer import VitCropNet


def _inputs(batch=2, size=16):
    x = torch.randn(batch, 4, size, size, size)
    x[:, 2:] = 0.0
    x[:, 2, 6:10, 6:10, 6:10] = 1.0  # tumour
    x[:, 3, 4:12, 4:12, 4:12] = 1.0
    x[:, 3, 6:10, 6:10, 6:10] = 0.0  # ring around it
    return x


def test_transformer_maps_a_crop_to_logits_and_reads_only_its_regions():
    torch.manual_seed(0)
    net = VitCropNet(4, (2, 3), 16, n_classes=3, pools=("tumour_mean", "ring_max")).eval()
    x = _inputs()
    with torch.no_grad():
        logits = net(x)
        assert logits.shape == (2, 3) and torch.isfinite(logits).all()
        # Tokens come from maxima inside the tumour and the ring only: the far corners of the crop
        # (no tumour, no ring) do not change the output.
        far = x.clone()
        far[:, :2, :4, :4, :4] += 5.0
        torch.testing.assert_close(net(far), logits)
        near = x.clone()
        near[:, :2, 4:6, 4:6, 4:6] += 5.0  # inside the ring
        assert not torch.allclose(net(near), logits)
    assert net.cam_layers == ["stem.conv"]


def test_transformer_crop_must_be_whole_patches():
    with pytest.raises(WsiHccError, match="--crop-size 20"):
        TrainConfig(model="transformer", crop=CropSpec(size_vox=21))
    with pytest.raises(WsiHccError, match="does not divide"):
        VitCropNet(4, (2, 3), 4, patch_vox=4)
    config = TrainConfig(model="transformer", crop=CropSpec(size_vox=16))
    model = untrained_model(config)
    assert model.card["kind"] == "transformer" and model.card["args"]["crop_vox"] == 16


def test_transformer_predicts_and_explains_a_real_ct(tmp_path):
    ct_path, seg_path, _ = real_ct_with_drawn_tumour(tmp_path)
    from wsi_hcc.cli.radiology_models import explain, predict

    save_classifier(untrained_model(TrainConfig(model="transformer", phases=("portal",), single_phase="portal",
                                                crop=CropSpec(size_vox=16, spacing_mm=3.0))), tmp_path / "model")
    common = ["--image", f"portal={ct_path}", "--tumour", str(tmp_path / "tumour.nii.gz"), "--liver", str(seg_path),
              "--liver-label", "5"]
    runner = CliRunner()
    result = runner.invoke(predict, ["--model", str(tmp_path / "model"), *common, "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    prediction = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert prediction["model"] == "transformer"
    assert sum(prediction["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    result = runner.invoke(explain, ["--model", str(tmp_path / "model"), *common, "--out", str(tmp_path / "cam")])
    assert result.exit_code == 0, result.output
    energy = json.loads((tmp_path / "cam" / "energy.json").read_text())
    assert energy["model"] == "transformer" and set(energy["energy"]) == {"tumour", "ring", "liver", "outside"}
    cam = load_volume(tmp_path / "cam" / "cam.nii.gz")
    assert cam.shape == (16, 16, 16) and 0.0 <= cam.array.min() and cam.array.max() <= 1.0
    assert energy["files"]["png"] and (tmp_path / "cam" / energy["files"]["png"][0]).is_file()
    # random weights by architecture name work too
    result = runner.invoke(predict, ["--arch", "transformer", *common, "--out", str(tmp_path / "rand")])
    assert result.exit_code == 0, result.output


@pytest.mark.slow
def test_trained_transformer_separates_held_out_mvi_phantoms(tmp_path):
    """The cohort of the multiphase CNN's slow test (56 phantoms, 8 satellites, seed 7), 17 held out."""
    from wsi_hcc.radiology.classify_run import run_training
    from wsi_hcc.radiology.cohort import phantom_cohort

    torch.set_num_threads(2)
    spec = CropSpec(size_vox=24, spacing_mm=2.0)
    cases = phantom_cohort(56, seed=7, spec=spec, n_satellites=8, noise_hu=8.0)
    config = TrainConfig(task="mvi", model="transformer", crop=spec, epochs=60, seed=0)
    report = run_training(config, cases, tmp_path / "run", test_fraction=0.3)
    held, cam = report["held_out"], report["cam"]
    print(f"\ntransformer: training {report['training']['seconds']:.1f} s, held-out AUC {held['roc_auc']:.3f} on "
          f"{held['cases']} cases; CAM per voxel {cam['mean_per_voxel']}")
    assert held["cases"] == 17 and held["roc_auc"] >= 0.9
    # Grad-CAM on the stem sits on the tumour; per voxel the ring about equals the far liver (see transformer.py).
    assert cam["cases"] >= 8 and cam["mean_per_voxel"]["tumour"] > 2 * cam["mean_per_voxel"]["liver"]
    card = json.loads((tmp_path / "run" / "model" / "card.json").read_text())
    assert card["kind"] == "transformer" and (tmp_path / "run" / "cam_example" / "cam.nii.gz").is_file()
