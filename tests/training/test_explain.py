"""Grad-CAM: heat where the evidence is, per-tile classes, no side effects; `wsi-hcc explain` outputs and errors."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from wsi_hcc.cli.app import main
from wsi_hcc.models import ModelCard, create_backbone, save_weights, to_model_input
from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.store.patch_store import TileReader
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.training.errors import TrainError
from wsi_hcc.training.gradcam import GradCam, explain_tiles, explanation_png, find_cam_layer, heat_overlay


class Toy(nn.Module):
    """Class 0 scores the mean red of the tile, class 1 the mean blue (through a 1x1 conv and ReLU)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.bias.zero_()
            self.features.weight[0, 0] = 1.0
            self.features.weight[1, 2] = 1.0
            self.head.weight.copy_(torch.eye(2) * 10)
            self.head.bias.zero_()
        self.card = ModelCard(architecture="toy", num_classes=2, class_names=("red", "blue"), feature_dim=2,
                              input_px=32, tile_px=32, cam_layer="act")

    def forward(self, x):
        return self.head(self.pool(self.act(self.features(x))).flatten(1))


def _tile(red_size: int = 8, blue_size: int = 10) -> np.ndarray:
    tile = np.zeros((32, 32, 3), dtype=np.uint8)
    tile[2:2 + red_size, 2:2 + red_size, 0] = 255      # red, top left
    tile[20:20 + blue_size, 20:20 + blue_size, 2] = 255  # blue, bottom right
    return tile


def test_heat_lies_on_the_evidence_for_each_class():
    model = Toy()
    tiles = torch.from_numpy(np.stack([_tile(), _tile()]))
    maps, probs = explain_tiles(model, tiles, class_idx=[0, 1])
    assert maps.shape == (2, 32, 32) and probs.shape == (2, 2)
    red, blue = (slice(2, 10), slice(2, 10)), (slice(20, 30), slice(20, 30))
    assert maps[0][red].mean() > 0.9 and maps[0][blue].max() < 0.05
    assert maps[1][blue].mean() > 0.9 and maps[1][red].max() < 0.05
    assert np.unravel_index(maps[0].argmax(), maps[0].shape)[0] < 12
    # without a class, each tile is explained for its own prediction
    mostly_red = torch.from_numpy(np.stack([_tile(red_size=14, blue_size=4)]))
    maps, probs = explain_tiles(model, mostly_red)
    assert probs[0].argmax() == 0 and maps[0][2:16, 2:16].mean() > 0.9


def test_gradcam_leaves_the_model_as_it_was():
    model = Toy().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cam = GradCam(model)
    assert cam.layer_name == "act"
    cam(to_model_input(torch.from_numpy(_tile()[None]), model.card), class_idx=1)
    assert model.training and not model.act._forward_hooks and not model.act._backward_hooks
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_the_cam_layer_comes_from_the_card_timm_or_the_last_spatial_module():
    assert find_cam_layer(Toy(), Toy().card) == "act"
    assert find_cam_layer(create_backbone("test_resnet", num_classes=2)) == "layer4"
    assert find_cam_layer(create_backbone("resnet34", num_classes=2)) == "layer4"  # from its card
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2))
    assert find_cam_layer(plain) == "1"
    with pytest.raises(TrainError, match="cam_layer 'nope' is not a module of toy"):
        find_cam_layer(Toy(), replace(Toy().card, cam_layer="nope"))


def test_overlay_and_picture():
    tile = np.full((8, 8, 3), 200, dtype=np.uint8)
    np.testing.assert_array_equal(heat_overlay(tile, np.ones((8, 8)), alpha=0.0), tile)
    hot = heat_overlay(tile, np.ones((8, 8)), alpha=1.0)
    np.testing.assert_array_equal(hot[0, 0], [128, 0, 0])  # jet(1.0) is dark red
    cold = heat_overlay(tile, np.zeros((8, 8)), alpha=1.0)
    np.testing.assert_array_equal(cold[0, 0], [0, 0, 128])  # jet(0.0) is dark blue
    picture = Image.open(io.BytesIO(explanation_png(tile, np.ones((8, 8)), title="t")))
    assert picture.format == "PNG" and picture.width > 2 * picture.height * 0.9  # tile and overlay side by side


def test_explanation_figure_has_a_title_with_class_and_score_and_a_colour_bar():
    from wsi_hcc.viz.tiles import explanation_figure, explanation_title

    title = explanation_title("tumour", 0.934, "tumour", "s1 tile 7")
    assert title == "s1 tile 7: Grad-CAM for tumour, P = 0.93 (predicted: tumour)"
    figure = explanation_figure(np.full((64, 64, 3), 200, np.uint8), np.linspace(0, 1, 64 * 64).reshape(64, 64), title)
    assert figure.get_suptitle() == title
    bar = [ax for ax in figure.axes if ax.get_ylabel() == "evidence for the class"]
    assert len(bar) == 1 and [t.get_text() for t in bar[0].get_yticklabels()] == ["0 none", "0.5", "1 strongest"]


# -- wsi-hcc explain --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A small synthetic store (1 um/px, 64 px tiles) and a test_resnet classifier with a card for it."""
    from wsi_hcc.synth import write_synthetic_slide

    root = tmp_path_factory.mktemp("explain")
    slide = write_synthetic_slide(root / "e.svs", size_px=(1024, 768), mpp=0.5, seed=4)
    run_tile([slide.path], root / "stores", TileConfig(target_mpp=1.0, tile_px=64, qc=False, compression="none"))
    run_tile([slide.path], root / "half", TileConfig(target_mpp=0.5, tile_px=64, qc=False, compression="none"))
    torch.manual_seed(0)
    model = create_backbone("test_resnet", num_classes=2)
    card = replace(model.card, class_names=("normal", "tumour"), input_px=64, tile_px=64, target_mpp=1.0)
    weights = root / "cls.safetensors"
    save_weights(model, card, weights)
    torch.save(model.state_dict(), root / "cls.pt")
    return root, root / "stores" / "e.zarr", weights


def _probabilities(weights, store):
    model = create_backbone("test_resnet", weights=weights).eval()
    reader = TileReader(store)
    tiles = torch.from_numpy(np.stack([reader[i] for i in range(len(reader))]))
    with torch.no_grad():
        return torch.softmax(model(to_model_input(tiles, model.card)), dim=1).numpy()


def test_explain_writes_an_overlay_per_tile_and_the_scores(classifier, tmp_path):
    _, store, weights = classifier
    result = CliRunner().invoke(main, ["explain", str(store), "--weights", str(weights), "--tiles", "0,2",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.explain.json").read_text())
    assert [t["tile"] for t in report["tiles"]] == [0, 2] and report["cam_layer"] == "layer4"
    assert report["weights_sha256"] and report["card"]["class_names"] == ["normal", "tumour"]
    probs = _probabilities(weights, store)
    for record in report["tiles"]:
        assert record["explained_class"] == record["predicted"]
        np.testing.assert_allclose(list(record["scores"].values()), probs[record["tile"]], atol=1e-5)
        picture = Image.open(tmp_path / record["picture"])
        assert picture.width > 2 * picture.height * 0.9  # the tile, then its overlay with a colour bar
        score = record["scores"][record["explained_class"]]
        assert record["title"] == (f"e tile {record['tile']}: Grad-CAM for {record['explained_class']}, "
                                   f"P = {score:.2f} (predicted: {record['predicted']})")
    assert {p.name for p in tmp_path.glob("*.png")} == {t["picture"] for t in report["tiles"]}
    assert not list(tmp_path.glob(".*partial"))


def test_explain_top_picks_the_highest_scoring_tiles(classifier, tmp_path):
    _, store, weights = classifier
    result = CliRunner().invoke(main, ["explain", str(store), "--weights", str(weights), "--top", "3", "--class",
                                       "tumour", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.explain.json").read_text())
    expected = np.argsort(-_probabilities(weights, store)[:, 1], kind="stable")[:3]
    assert [t["tile"] for t in report["tiles"]] == [int(i) for i in expected]
    assert all(t["explained_class"] == "tumour" for t in report["tiles"])


def test_weights_without_a_card_need_the_backbone(classifier, tmp_path):
    root, store, _ = classifier
    runner = CliRunner()
    missing = runner.invoke(main, ["explain", str(store), "--weights", str(root / "cls.pt"), "--tiles", "1",
                                   "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "carries no model card; pass --arch" in missing.output
    # the timm card assumes 0.5 um/px: the 1 um/px store is refused with the fix, the 0.5 um/px one works
    wrong = runner.invoke(main, ["explain", str(store), "--weights", str(root / "cls.pt"), "--arch", "test_resnet",
                                 "--tiles", "1", "--out", str(tmp_path)])
    assert wrong.exit_code == 2 and "re-tile with --mpp 0.5" in wrong.output
    ok = runner.invoke(main, ["explain", str(root / "half" / "e.zarr"), "--weights", str(root / "cls.pt"),
                              "--arch", "test_resnet", "--tiles", "1", "--out", str(tmp_path)])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("args, expected", [
    (["--tiles", "999"], "tile 999 is out of range (the store has"),
    (["--tiles", "1", "--class", "nope"], "class 'nope' is not one of the model's classes ['normal', 'tumour']"),
    ([], "choose tiles with --tiles 0,5,9 or --top K"),
    (["--tiles", "1", "--top", "2"], "choose tiles with --tiles 0,5,9 or --top K"),
])
def test_explain_errors_are_one_line(classifier, tmp_path, args, expected):
    _, store, weights = classifier
    result = CliRunner().invoke(main, ["explain", str(store), "--weights", str(weights), *args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and expected in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_explain_bad_inputs(classifier, tmp_path):
    _, store, weights = classifier
    runner = CliRunner()
    not_store = runner.invoke(main, ["explain", str(tmp_path), "--weights", str(weights), "--tiles", "0",
                                     "--out", str(tmp_path / "o")])
    assert not_store.exit_code == 2 and "not a patch store" in not_store.output
    no_weights = runner.invoke(main, ["explain", str(store), "--weights", str(tmp_path / "w.safetensors"),
                                      "--tiles", "0", "--out", str(tmp_path / "o")])
    assert no_weights.exit_code == 2 and "w.safetensors: weights file not found" in no_weights.output
    bad_tiles = runner.invoke(main, ["explain", str(store), "--weights", str(weights), "--tiles", "a,b",
                                     "--out", str(tmp_path / "o")])
    assert bad_tiles.exit_code == 2 and "give tile indices separated by commas" in bad_tiles.output
    help_text = runner.invoke(main, ["explain", "--help"]).output
    assert "Examples:" in help_text and "--top 12 --class HCC" in help_text


@pytest.mark.slow
def test_gradcam_matches_monai():
    from monai.visualize import GradCAM as MonaiGradCAM

    torch.manual_seed(0)
    model = create_backbone("test_resnet", num_classes=3).eval()
    x = torch.randn(2, 3, 96, 96)
    ours, _ = GradCam(model, "layer4")(x, class_idx=2)
    reference = create_backbone("test_resnet", num_classes=3).eval()
    reference.load_state_dict(model.state_dict())
    raw = MonaiGradCAM(nn_module=reference, target_layers="layer4", postprocessing=lambda m: m)(x, class_idx=2)
    raw = raw[:, 0].detach().numpy()
    low, high = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    assert (high > low).all()
    np.testing.assert_allclose(ours, (raw - low) / (high - low), atol=1e-5)
