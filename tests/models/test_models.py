"""The backbone registry, model cards, safe local weights and preprocessing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from wsi_hcc.models import (
    BackboneEntry,
    ModelCard,
    WeightsError,
    create_backbone,
    file_sha256,
    list_backbones,
    register_backbone,
    save_weights,
    to_model_input,
)


def _eval_out(model, x):
    with torch.inference_mode():
        return model.eval()(x)


def test_resnet34_card_and_heads():
    model = create_backbone("resnet34")
    assert model.card.num_classes == 2 and model.card.class_names == ("non-HCC", "HCC")
    assert model.card.target_mpp == 0.5 and model.card.input_px == 224 and model.card.channel_order == "RGB"
    assert _eval_out(model, torch.zeros(2, 3, 224, 224)).shape == (2, 2)
    features = create_backbone("resnet34", num_classes=0)
    assert features.card.num_classes == 0
    assert _eval_out(features, torch.zeros(2, 3, 224, 224)).shape == (2, features.card.feature_dim) == (2, 512)


def test_any_timm_name_builds_with_a_card_that_matches_its_output():
    model = create_backbone("resnet18", num_classes=0)
    assert _eval_out(model, torch.zeros(1, 3, 224, 224)).shape == (1, model.card.feature_dim)
    assert "assumed" in model.card.notes


def test_unknown_name_and_duplicate_registration_are_errors():
    with pytest.raises(WeightsError, match="unknown backbone 'no-such-net'"):
        create_backbone("no-such-net")
    assert "resnet34" in list_backbones()
    entry = BackboneEntry(name="resnet34", build=lambda num_classes: None,
                          card=ModelCard("x", 0, (), 1), classifier="fc")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(entry)


def test_safetensors_round_trip_keeps_weights_and_card(tmp_path):
    torch.manual_seed(0)
    model = create_backbone("resnet34", num_classes=3)
    reference = {"method": "reinhard", "mean": [1.0, 2.0, 3.0]}
    card = ModelCard.from_dict(model.card.to_dict() | {"class_names": ["a", "b", "c"],
                                                       "stain_reference": reference})
    path = tmp_path / "m.safetensors"
    sha = save_weights(model, card, path)
    loaded = create_backbone("resnet34", weights=path)
    x = torch.rand(2, 3, 224, 224)
    assert torch.equal(_eval_out(model, x), _eval_out(loaded, x))
    assert loaded.card.class_names == ("a", "b", "c") and loaded.card.stain_reference == reference
    assert loaded.card.weights_sha256 == sha == file_sha256(path)
    assert not list(tmp_path.glob(".*partial"))


def test_torch_state_dict_loads_infers_classes_and_can_drop_the_head(tmp_path):
    torch.manual_seed(1)
    model = create_backbone("resnet34", num_classes=5)
    path = tmp_path / "m.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded = create_backbone("resnet34", weights=path)
    assert loaded.card.num_classes == 5 and loaded.card.class_names == tuple(f"class_{i}" for i in range(5))
    x = torch.rand(1, 3, 224, 224)
    assert torch.equal(_eval_out(model, x), _eval_out(loaded, x))
    features = create_backbone("resnet34", num_classes=0, weights=path)
    expected = model.eval().forward_head(model.forward_features(x), pre_logits=True)
    assert torch.allclose(_eval_out(features, x), expected.detach())


class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_unsafe_or_unfitting_weights_are_one_line_errors(tmp_path):
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"fc.weight": _Payload()}))
    with pytest.raises(WeightsError, match=r"evil\.pt: cannot be loaded safely"):
        create_backbone("resnet34", weights=evil)
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)}, wrong)
    with pytest.raises(WeightsError, match=r"wrong\.pt: does not fit backbone 'resnet34'") as info:
        create_backbone("resnet34", weights=wrong)
    assert "\n" not in str(info.value)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(WeightsError, match="unknown weights format"):
        create_backbone("resnet34", weights=text)
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("resnet34", weights=tmp_path / "missing.safetensors")


def test_to_model_input_follows_the_card():
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8))
    rgb = ModelCard("m", 0, (), 8, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    x = to_model_input(tiles, rgb)
    manual = (tiles.permute(0, 3, 1, 2).float() / 255 - torch.tensor(rgb.mean).view(1, 3, 1, 1)) \
        / torch.tensor(rgb.std).view(1, 3, 1, 1)
    assert torch.allclose(x, manual, atol=1e-5)
    assert x.is_contiguous(memory_format=torch.channels_last)
    bgr = to_model_input(tiles, ModelCard("m", 0, (), 8, channel_order="BGR"))
    assert torch.allclose(bgr[:, 0], tiles[..., 2].float() / 255)
    resized = to_model_input(tiles[:, :112, :112], rgb)
    assert resized.shape == (2, 3, 224, 224)
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(tiles.float(), rgb)


def test_feature_extractor_weights_load_and_can_get_a_new_head(tmp_path):
    torch.manual_seed(2)
    extractor = create_backbone("resnet34", num_classes=0)
    path = tmp_path / "features.safetensors"
    save_weights(extractor, extractor.card, path)
    reloaded = create_backbone("resnet34", weights=path)
    x = torch.rand(1, 3, 224, 224)
    assert reloaded.card.num_classes == 0 and torch.equal(_eval_out(extractor, x), _eval_out(reloaded, x))
    finetune = create_backbone("resnet34", num_classes=3, weights=path)
    assert _eval_out(finetune, x).shape == (1, 3) and finetune.card.class_names == ("class_0", "class_1", "class_2")


def test_inference_tiling_comes_from_the_card(tmp_path):
    from wsi_hcc.errors import ConfigError
    from wsi_hcc.models import card_for, tiling_from_card

    assert tiling_from_card(card_for("livernet")) == (0.5, 224)
    assert tiling_from_card(card_for("resnet34"), target_mpp=0.5, tile_px=224) == (0.5, 224)
    with pytest.raises(ConfigError, match="--tile-px 256 contradicts resnet34's card"):
        tiling_from_card(card_for("resnet34"), tile_px=256)
    model = create_backbone("resnet34")
    card = ModelCard.from_dict(model.card.to_dict() | {"target_mpp": 0.25, "tile_px": 512})
    path = tmp_path / "m.safetensors"
    save_weights(model, card, path)
    assert tiling_from_card(card_for(path)) == (0.25, 512)


def test_tile_for_model_from_the_command_line(synth_slide, tmp_path):
    import json

    from click.testing import CliRunner

    from wsi_hcc.cli.app import main

    result = CliRunner().invoke(main, ["tile", str(synth_slide), "--out", str(tmp_path), "--for-model", "livernet",
                                       "--no-qc"])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "synthetic.zarr" / ".zattrs").read_text())["wsi_hcc"]["tile_spec"]
    assert (spec["target_mpp"], spec["tile_px"]) == (0.5, 224)
    result = CliRunner().invoke(main, ["tile", str(synth_slide), "--out", str(tmp_path), "--for-model", "livernet",
                                       "--mpp", "1"])
    assert result.exit_code == 2 and "contradicts livernet's card" in result.output
