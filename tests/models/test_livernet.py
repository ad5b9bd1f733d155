"""LiverNet: graph quirks, parameter counts, the Keras .h5 loader, and agreement with the authors' model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from wsi_hcc.errors import WsiHccError
from wsi_hcc.models.keras_h5 import KERAS_LAYER_ORDER, load_livernet_keras_h5
from wsi_hcc.models.livernet import LiverNet, TFSameMaxPool2d

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LIVERNET_DIR = SHARED_DATA / "models" / "livernet"
REFERENCE_JSON = LIVERNET_DIR / "reference_outputs.json"
needs_real_weights = pytest.mark.skipif(not REFERENCE_JSON.exists(),
                                        reason="../shared/data absent: real LiverNet weights not available")

# Semantic names in reference_outputs.json that differ from LiverNet's module paths.
_JSON_PREFIXES = {"s2.": "stage2.", "s3.": "stage3."}


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _n_bn_running_stats(model: nn.Module) -> int:
    return sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))


# ---------------------------------------------------------------- architecture


def test_parameter_counts_match_keras_trainable_counts():
    kmc, tcga = LiverNet(4), LiverNet(3)
    assert _n_params(kmc) == 568_784
    assert _n_params(tcga) == 568_527
    # Keras' count_params adds BatchNorm moving mean and variance: 573,936 for the released model.
    assert _n_params(kmc) + _n_bn_running_stats(kmc) == 573_936


def test_intended_aspp_parameter_count():
    model = LiverNet(4, aspp="intended")
    # Keras reports 605,072 including BN moving statistics. Over the trained graph (5,152 moving
    # statistics), each ASPP block of width C gains four BatchNorms of width C (the depthwise BNs of
    # b1, b2, b3 and b3's pointwise BN): 2 * 4 * (32 + 64 + 128) = 1,792 more, so 6,944 in all.
    assert _n_bn_running_stats(model) == 5_152 + 1_792
    assert _n_params(model) == 605_072 - 6_944 == 598_128


def test_aspp_option_is_validated():
    with pytest.raises(ValueError, match="aspp"):
        LiverNet(aspp="paper")


def _naive_tf_same_max_pool(x: torch.Tensor, k: int = 3, s: int = 2) -> torch.Tensor:
    """Window by window, clipped to the image: TF 'same' puts the smaller half of the padding first."""
    def windows(n: int):
        out = -(-n // s)
        before = max((out - 1) * s + k - n, 0) // 2
        return [(max(i * s - before, 0), min(i * s - before + k, n)) for i in range(out)]

    rows, cols = windows(x.shape[-2]), windows(x.shape[-1])
    result = torch.empty(*x.shape[:-2], len(rows), len(cols), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows):
        for j, (c0, c1) in enumerate(cols):
            result[..., i, j] = x[..., r0:r1, c0:c1].amax(dim=(-2, -1))
    return result


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (6, 5), (2, 2)])
def test_tf_same_pool_matches_naive_reference(size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(TFSameMaxPool2d(3, 2)(x), _naive_tf_same_max_pool(x))


def test_tf_same_pool_padding_never_wins_and_differs_from_symmetric_padding():
    x = -1.0 - torch.rand(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    pooled = TFSameMaxPool2d(3, 2)(x)
    assert pooled.shape == (1, 4, 16, 16)
    assert torch.isfinite(pooled).all() and (pooled < -1.0).all()
    assert torch.equal(pooled, _naive_tf_same_max_pool(x))
    # PyTorch's symmetric padding shifts every window on even inputs.
    assert not torch.equal(pooled, nn.MaxPool2d(3, 2, padding=1)(x))


def test_hypercolumn_gap_equals_gap_of_upsampled_concatenation():
    torch.manual_seed(0)
    model = LiverNet(4).eval()
    captured = {}
    for name in ("aspp1", "aspp2", "aspp3"):
        model.get_submodule(name).register_forward_hook(lambda m, i, out, name=name: captured.update({name: out}))
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        features = model.forward_features(x)
        upsampled = [F.interpolate(captured[name], scale_factor=factor, mode="bilinear", align_corners=False)
                     for name, factor in (("aspp1", 2), ("aspp2", 4), ("aspp3", 8))]
    hypercolumn = torch.cat(upsampled, dim=1)
    assert hypercolumn.shape == (1, 224, 224, 224)
    assert features.shape == (1, 224)
    assert torch.allclose(features, hypercolumn.mean(dim=(2, 3)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_classes, out_dim", [(4, 4), (3, 3), (0, 256)])
def test_forward_shapes(num_classes, out_dim):
    model = LiverNet(num_classes).eval()
    x = torch.rand(2, 3, 32, 32)  # any multiple of 8 works; the tests around this one use 224
    with torch.no_grad():
        features = model.forward_features(x)
        out = model(x)
        penultimate = model.forward_head(features, pre_logits=True)
    assert features.shape == (2, 224)
    assert out.shape == (2, out_dim)
    assert penultimate.shape == (2, LiverNet.num_features)
    if num_classes == 0:
        assert isinstance(model.head.classifier, nn.Identity)
        assert torch.equal(out, penultimate)


def test_cam_layer_is_the_28px_map_before_the_global_pool():
    model = LiverNet(4).eval()
    shapes = []
    model.get_submodule(LiverNet.cam_layer).register_forward_hook(lambda m, i, out: shapes.append(out.shape))
    with torch.no_grad():
        model(torch.rand(1, 3, 224, 224))
    assert shapes == [(1, 128, 28, 28)]


# ---------------------------------------------------------------- loader, on synthetic files


def _write_keras_h5(path: Path, model: nn.Module, drop_layer: str | None = None,
                    reshape_layer: str | None = None) -> None:
    """Write ``model`` the way Keras ``save_weights`` does, with weightless layers in between."""
    def keras_weights(module: nn.Module) -> dict[str, np.ndarray]:
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return {"gamma": module.weight, "beta": module.bias, "moving_mean": module.running_mean,
                    "moving_variance": module.running_var}
        weights = {}
        if isinstance(module, nn.Linear):
            weights["kernel"] = module.weight.T
        elif module.groups > 1:
            weights["depthwise_kernel"] = module.weight.permute(2, 3, 0, 1)
        else:
            weights["kernel"] = module.weight.permute(2, 3, 1, 0)
        if module.bias is not None:
            weights["bias"] = module.bias
        return weights

    names = []
    with h5py.File(path, "w") as h5:
        h5.attrs["keras_version"] = b"2.4.0"
        for i, module_path in enumerate(KERAS_LAYER_ORDER):
            for layer in (f"activation_{i}", f"layer_{i}"):
                names.append(layer.encode())
                # Keras stores an empty float array for layers without weights
                h5.create_group(layer).attrs["weight_names"] = np.array([], dtype=np.float64)
            if module_path == drop_layer:
                continue
            group = h5[layer]
            weight_names = []
            for short, tensor in keras_weights(model.get_submodule(module_path)).items():
                array = tensor.detach().numpy()
                if module_path == reshape_layer:
                    array = array[..., :-1]
                full = f"{layer}/{short}:0"
                group.create_dataset(full, data=np.ascontiguousarray(array))
                weight_names.append(full.encode())
            group.attrs["weight_names"] = np.array(weight_names)
        h5.attrs["layer_names"] = np.array(names)


def _randomised(model: LiverNet) -> LiverNet:
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith(("running_mean", "running_var")):
                buffer.uniform_(0.5, 1.5)
    return model


def test_loader_round_trips_a_keras_layout_file(tmp_path):
    torch.manual_seed(0)
    model = _randomised(LiverNet(3))
    path = tmp_path / "weights.h5"
    _write_keras_h5(path, model)
    state, num_classes = load_livernet_keras_h5(path)
    assert num_classes == 3
    assert state.keys() == model.state_dict().keys()
    for key, tensor in model.state_dict().items():
        assert torch.equal(state[key], tensor), key
    LiverNet(num_classes).load_state_dict(state, strict=True)


def test_loader_rejects_text_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not weights\n")
    with pytest.raises(WsiHccError, match="notes.h5.*not an HDF5 file"):
        load_livernet_keras_h5(path)


def test_loader_rejects_other_h5(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WsiHccError, match="other.h5.*not a LiverNet Keras weights file"):
        load_livernet_keras_h5(path)


def test_loader_rejects_missing_file(tmp_path):
    with pytest.raises(WsiHccError, match="absent.h5.*not found"):
        load_livernet_keras_h5(tmp_path / "absent.h5")


def test_loader_rejects_wrong_layer_count(tmp_path):
    path = tmp_path / "short.h5"
    _write_keras_h5(path, LiverNet(4), drop_layer="stage3.cbam.mlp1")
    with pytest.raises(WsiHccError, match="short.h5.*68 layers with weights, LiverNet has 69"):
        load_livernet_keras_h5(path)


def test_loader_rejects_shape_mismatch(tmp_path):
    path = tmp_path / "bad.h5"
    _write_keras_h5(path, LiverNet(4), reshape_layer="aspp2.fuse.conv")
    with pytest.raises(WsiHccError, match="bad.h5.*shape.*aspp2.fuse.conv.weight"):
        load_livernet_keras_h5(path)


# ---------------------------------------------------------------- the authors' weights and outputs


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE_JSON.read_text())


def _preprocess(entry: dict) -> np.ndarray:
    """One reference input as the README records it: HWC float32, channels as the model sees them (BGR)."""
    if entry["kind"] == "synthetic":
        return np.random.default_rng(entry["seed"]).random((224, 224, 3)).astype(np.float32)
    image = Image.open(SHARED_DATA / entry["file"]).convert("RGB")
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    assert list(box) == entry["crop_box_ltrb"]
    rgb = np.asarray(image.crop(box).resize((224, 224), Image.Resampling.BILINEAR))
    assert hashlib.sha256(rgb.tobytes()).hexdigest() == entry["rgb224_uint8_sha256"], entry["file"]
    return (rgb[..., ::-1] / 255.0).astype(np.float32)


@pytest.fixture(scope="module")
def reference_inputs(reference) -> np.ndarray:
    """All 15 reference inputs, NHWC float32."""
    return np.stack([_preprocess(entry) for entry in reference["inputs"]])


@pytest.fixture(scope="module")
def reference_batch(reference_inputs) -> torch.Tensor:
    return torch.from_numpy(reference_inputs).permute(0, 3, 1, 2).contiguous()


@needs_real_weights
def test_preprocessing_matches_reference(reference, reference_inputs):
    expected = [e.get("input_channel_mean_bgr", e.get("input_channel_mean")) for e in reference["inputs"]]
    # The recorded means are NumPy float32 means of each HWC input (float32 accumulation, off from
    # the exact mean by up to 3e-4); computed the same way they agree to the last bit.
    means = [image.mean(axis=(0, 1)) for image in reference_inputs]
    np.testing.assert_allclose(np.array(means), np.array(expected), rtol=0, atol=1e-7)


def _keras_to_torch(cls: str, name: str, array: np.ndarray) -> np.ndarray:
    if cls == "Conv2D" and name == "kernel":
        return array.transpose(3, 2, 0, 1)
    if cls == "DepthwiseConv2D":
        return array.transpose(2, 3, 0, 1)
    if cls == "Dense" and name == "kernel":
        return array.T
    return array


_TORCH_NAMES = {"kernel": "weight", "depthwise_kernel": "weight", "bias": "bias", "gamma": "weight",
                "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


@needs_real_weights
@pytest.mark.parametrize("dataset", ["KMC", "TCGA"])
def test_loader_matches_reference_weight_map(reference, dataset):
    ref = reference["models"][dataset]
    path = LIVERNET_DIR / ref["weights_file"]
    state, num_classes = load_livernet_keras_h5(path)
    assert num_classes == ref["n_classes"]
    layer_class = {layer["name"]: layer["cls"] for layer in ref["layers"]}
    checked = set()
    with h5py.File(path, "r") as h5:
        for semantic, entry in ref["weight_map"].items():
            module_path = semantic
            for old, new in _JSON_PREFIXES.items():
                if semantic.startswith(old):
                    module_path = new + semantic[len(old):]
            layer = entry["h5_layer"]
            for weight in entry["weights"]:
                array = np.asarray(h5[f"{layer}/{layer}/{weight['name']}:0"])
                assert list(array.shape) == weight["shape"]
                key = f"{module_path}.{_TORCH_NAMES[weight['name']]}"
                expected = _keras_to_torch(layer_class[layer], weight["name"], array)
                assert np.array_equal(state[key].numpy(), expected), key
                checked.add(key)
    assert checked == {k for k in state if not k.endswith("num_batches_tracked")}


@needs_real_weights
@pytest.mark.parametrize("dataset", ["KMC", "TCGA"])
def test_released_weights_reproduce_keras_outputs(reference, reference_batch, dataset):
    ref = reference["models"][dataset]
    state, num_classes = load_livernet_keras_h5(LIVERNET_DIR / ref["weights_file"])
    model = LiverNet(num_classes).eval()
    model.load_state_dict(state, strict=True)
    with torch.inference_mode():
        features = model.forward_features(reference_batch)
        probabilities = model.forward_head(features).softmax(dim=1).numpy()
    outputs = ref["outputs"]
    assert [o["input_index"] for o in outputs] == list(range(len(reference["inputs"])))
    expected = np.array([o["probabilities"] for o in outputs])
    assert np.abs(probabilities - expected).max() < 1e-4
    assert probabilities.argmax(axis=1).tolist() == [o["argmax"] for o in outputs]
    hypercolumn = np.array([o["hypercolumn_gap_224"] for o in outputs])
    np.testing.assert_allclose(features.numpy(), hypercolumn, rtol=1e-4, atol=1e-4)


def _rgb224(entry: dict) -> np.ndarray:
    """A real reference input as RGB uint8 (what a patch store holds), from its BGR /255 floats."""
    return np.rint(_preprocess(entry)[..., ::-1] * 255.0).astype(np.uint8)


@needs_real_weights
def test_registry_and_card_reproduce_keras_outputs_from_rgb_tiles(reference):
    """The issue's check, the way a user runs it: create_backbone + the card's own preprocessing."""
    from wsi_hcc.models import create_backbone, to_model_input

    ref = reference["models"]["KMC"]
    model = create_backbone("livernet", num_classes=4, weights=LIVERNET_DIR / ref["weights_file"]).eval()
    assert model.card.channel_order == "BGR" and model.card.weights_sha256 == ref["weights_sha256"]
    images = [i for i, e in enumerate(reference["inputs"]) if e["kind"] != "synthetic"]
    tiles = torch.from_numpy(np.stack([_rgb224(reference["inputs"][i]) for i in images]))
    with torch.inference_mode():
        probabilities = model(to_model_input(tiles, model.card)).softmax(dim=1).numpy()
    expected = np.array([ref["outputs"][i]["probabilities"] for i in images])
    assert np.abs(probabilities - expected).max() < 1e-4


@needs_real_weights
def test_normal_liver_tiles_are_non_cancerous_under_the_corrected_class_order(reference):
    """The spec's evidence, through the library's API: LiverNet KMC calls the four GTEx normal-liver
    tiles non-cancerous (at least three of them); its card says the names are inferred and the
    resolution assumed, and the TCGA file gets its own card with unnamed classes."""
    from wsi_hcc.models import create_backbone, to_model_input

    model = create_backbone("livernet", weights=LIVERNET_DIR / reference["models"]["KMC"]["weights_file"]).eval()
    card = model.card
    assert card.class_names == ("high grade", "low grade", "medium grade", "non-cancerous")
    assert (card.class_names_source, card.mpp_source) == ("inferred", "assumed")
    assert card.assumptions == ("class names inferred", "resolution assumed")
    liver = [e for e in reference["inputs"] if "liverquant" in e.get("file", "")]
    assert len(liver) == 4
    tiles = torch.from_numpy(np.stack([_rgb224(entry) for entry in liver]))
    with torch.inference_mode():
        top = model(to_model_input(tiles, card)).argmax(dim=1).tolist()
    assert sum(card.class_names[k] == "non-cancerous" for k in top) >= 3, [card.class_names[k] for k in top]
    tcga = create_backbone("livernet", weights=LIVERNET_DIR / reference["models"]["TCGA"]["weights_file"])
    assert tcga.card.class_names == ("class_0", "class_1", "class_2") and tcga.card.class_names_source == "unnamed"


def test_a_keras_file_that_is_not_a_released_one_gets_unnamed_classes(tmp_path):
    """Only the released files are known by sha256; any other LiverNet .h5 must not borrow KMC's names."""
    from wsi_hcc.models import create_backbone

    torch.manual_seed(1)
    path = tmp_path / "mine.h5"
    _write_keras_h5(path, _randomised(LiverNet(4)))
    card = create_backbone("livernet", weights=path).card
    assert card.class_names == ("class_0", "class_1", "class_2", "class_3")
    assert card.class_names_source == "unnamed" and "not among the released files" in card.notes
