"""Read the LiverNet authors' Keras ``save_weights`` HDF5 files into a PyTorch state dict (h5py only).

Layer names in these files carry the training session's auto-numbering (``conv2d_41`` in one file,
``conv2d`` in another), so they cannot identify layers. What is stable is the root attribute
``layer_names``: Keras writes the layers in the model's topological order, which depends only on
the graph. The weighted layers in that order are matched one to one with the modules of
``LiverNet(aspp="trained")``, checking each layer's kind (from its ``weight_names``) and shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wsi_hcc.errors import WsiHccError
from wsi_hcc.models.livernet import LiverNet

__all__ = ["load_livernet_keras_h5", "KERAS_LAYER_ORDER"]

_HINT = "pass the .h5 saved by the authors' notebook"


def _aspp_topological_order() -> list[str]:
    """The ASPP layers as Keras orders them: sorted by depth in the graph, so the three blocks interleave."""
    blocks = ("aspp1", "aspp2", "aspp3")
    order = [f"{a}.b5.dw" for a in blocks] + [f"{a}.b5.dw_bn" for a in blocks]
    order += [f"{a}.{b}.conv" for a in blocks for b in ("b4", "b2")]
    order += [f"{a}.{m}" for a in blocks for m in ("b4.bn", "b0.conv", "b1.conv", "b2.bn", "b5.pw")]
    order += [f"{a}.{m}" for a in blocks for m in ("b0.bn", "b1.bn", "b5.pw_bn")]
    order += [f"{a}.fuse.conv" for a in blocks] + [f"{a}.fuse.bn" for a in blocks]
    return order


def _stage(name: str) -> list[str]:
    return [f"{name}.conv", f"{name}.bn", f"{name}.cbam.mlp1", f"{name}.cbam.mlp2", f"{name}.cbam.spatial_conv",
            f"{name}.res.conv1", f"{name}.res.bn1", f"{name}.res.conv2", f"{name}.res.bn2"]


# LiverNet module paths of the file's weighted layers, in the file's (topological) order.
KERAS_LAYER_ORDER: tuple[str, ...] = (
    "stem.conv1", "stem.bn1", "stem.conv2", "stem.bn2",
    *_stage("stage2"), *_stage("stage3"),
    *_aspp_topological_order(),
    "head.fc1", "head.bn1", "head.fc2", "head.bn2", "head.classifier",
)

# Keras BatchNormalization weight names (without the layer prefix) -> PyTorch names.
_BN_NAMES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}


def _fail(path: Path, why: str) -> WsiHccError:
    return WsiHccError(f"{path}: not a LiverNet Keras weights file ({why}); {_HINT}")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _weighted_layers(h5, path: Path) -> list[tuple[str, dict[str, np.ndarray]]]:
    """(layer name, {short weight name: array}) for every layer with weights, in the file's order."""
    if "layer_names" not in h5.attrs:
        raise _fail(path, "no root attribute 'layer_names'")
    layers = []
    for layer in map(_text, h5.attrs["layer_names"]):
        group = h5.get(layer)
        if group is None or "weight_names" not in group.attrs:
            raise _fail(path, f"layer {layer!r} has no weight group")
        weights = {}
        for full_name in map(_text, group.attrs["weight_names"]):
            # "conv2d_41/kernel:0" -> "kernel"
            short = full_name.rsplit("/", 1)[-1].split(":", 1)[0]
            weights[short] = np.asarray(group[full_name])
        if weights:
            layers.append((layer, weights))
    return layers


def _kind(weights: dict[str, np.ndarray]) -> str:
    names = set(weights)
    if names == set(_BN_NAMES):
        return "batchnorm"
    if names == {"depthwise_kernel"}:
        return "depthwise"
    if "kernel" in names and names <= {"kernel", "bias"}:
        return {4: "conv", 2: "dense"}.get(weights["kernel"].ndim, "unknown")
    return "unknown"


def _expected_kind(module: torch.nn.Module) -> str:
    if isinstance(module, torch.nn.Linear):
        return "dense"
    if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
        return "batchnorm"
    if isinstance(module, torch.nn.Conv2d):
        return "depthwise" if module.groups > 1 else "conv"
    raise TypeError(f"no Keras counterpart for {type(module).__name__}")


def _to_torch(kind: str, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if kind == "batchnorm":
        return {_BN_NAMES[k]: v for k, v in weights.items()}
    converted = {}
    if kind == "conv":  # (kh, kw, in, out) -> (out, in, kh, kw)
        converted["weight"] = weights["kernel"].transpose(3, 2, 0, 1)
    elif kind == "depthwise":  # (kh, kw, C, 1) -> (C, 1, kh, kw)
        converted["weight"] = weights["depthwise_kernel"].transpose(2, 3, 0, 1)
    else:  # dense: (in, out) -> (out, in)
        converted["weight"] = weights["kernel"].T
    if "bias" in weights:
        converted["bias"] = weights["bias"]
    return converted


def load_livernet_keras_h5(path: str | Path) -> tuple[dict[str, torch.Tensor], int]:
    """State dict for ``LiverNet(num_classes, aspp="trained")`` and ``num_classes``, from the authors' .h5.

    The state dict is complete (``load_state_dict(strict=True)`` accepts it).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise WsiHccError(f"{path}: weights file not found; {_HINT}")
    try:
        h5 = h5py.File(path, "r")
    except OSError:
        raise _fail(path, "not an HDF5 file") from None
    with h5:
        layers = _weighted_layers(h5, path)
    if len(layers) != len(KERAS_LAYER_ORDER):
        raise _fail(path, f"{len(layers)} layers with weights, LiverNet has {len(KERAS_LAYER_ORDER)}")
    classifier = layers[-1][1]
    if _kind(classifier) != "dense":
        raise _fail(path, f"last layer {layers[-1][0]!r} is not a dense classifier")
    num_classes = int(classifier["kernel"].shape[1])

    template = LiverNet(num_classes=num_classes, aspp="trained")
    state = template.state_dict()
    loaded = set()
    for (layer, weights), module_path in zip(layers, KERAS_LAYER_ORDER):
        kind, expected = _kind(weights), _expected_kind(template.get_submodule(module_path))
        if kind != expected:
            raise _fail(path, f"layer {layer!r} is {kind}, expected {expected} for {module_path}")
        for name, array in _to_torch(kind, weights).items():
            key = f"{module_path}.{name}"
            if key not in state or tuple(array.shape) != tuple(state[key].shape):
                want = tuple(state[key].shape) if key in state else "no such weight"
                raise _fail(path, f"layer {layer!r} {name} has shape {tuple(array.shape)}, expected {want} for {key}")
            state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
            loaded.add(key)
    # a fresh template's counters are already 0, which is what the file implies
    missing = [k for k in state if k not in loaded and not k.endswith("num_batches_tracked")]
    if missing:
        raise _fail(path, f"no weights for {', '.join(missing[:3])}")
    return state, num_classes
