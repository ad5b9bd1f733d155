"""Segmentation networks for multi-phase volumes: input ``(B, phases, z, y, x)``, output class logits.

- ``unet`` / ``dynunet`` / ``segresnet``: MONAI networks with the phases as input channels (Luo 2024).
- ``cross_phase``: a shared per-phase encoder, a per-voxel softmax over phases (cross-phase
  attention) and a MONAI U-Net on the fused features; the tumour stage of the two-stage pipeline
  (Gao 2024's liver ROI, then tumour with phase attention).
- ``convlstm``: a shared per-phase 3D encoder, a ConvLSTM cell stepping through the phases in
  acquisition order, and a small decoder (Zheng 2022's 3D conv + ConvLSTM); MONAI has no ConvLSTM.

Every builder is :func:`build_network` ``(name, in_channels, out_channels, **args)``; the name and args
go into the weights card so a model is rebuilt exactly (see ``weights``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

__all__ = ["MODEL_NAMES", "DEFAULT_ARGS", "build_network", "CrossPhaseAttentionNet", "ConvLSTM3dCell",
           "ConvLSTMSegNet", "size_multiple", "SegConfig", "SegModel", "PIPELINES", "new_member", "new_model"]

MODEL_NAMES = ("unet", "dynunet", "segresnet", "cross_phase", "convlstm")

# Small enough to train on a CPU in minutes; raise channels for real data.
DEFAULT_ARGS: dict[str, dict[str, Any]] = {
    "unet": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1, "norm": "instance"},
    "dynunet": {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "filters": [8, 16, 32, 64],
                "norm_name": "instance"},
    "segresnet": {"init_filters": 8, "blocks_down": [1, 2, 2], "blocks_up": [1, 1]},
    "cross_phase": {"features": 8, "channels": [16, 32, 64], "strides": [2, 2]},
    "convlstm": {"features": 8, "hidden": 16},
}


def size_multiple(name: str, args: dict[str, Any] | None = None) -> int:
    """The factor every spatial size of a patch must be a multiple of for ``name``."""
    args = {**DEFAULT_ARGS[name], **(args or {})}
    if name in ("unet", "dynunet", "cross_phase"):
        factor = 1
        for stride in args["strides"]:
            factor *= int(stride)
        return factor
    if name == "segresnet":
        return 2 ** (len(args["blocks_down"]) - 1)
    return 2


def _block(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                         nn.InstanceNorm3d(out_ch, affine=True), nn.LeakyReLU(0.1, inplace=True))


class CrossPhaseAttentionNet(nn.Module):
    """Per-phase encoder (shared weights) -> per-voxel softmax weights over phases -> U-Net.

    The attention map (``last_attention``, shape ``(B, phases, z, y, x)``) says which phase each
    voxel's fused features come from, e.g. arterial for enhancing tumour rims.
    """

    def __init__(self, in_channels: int, out_channels: int, features: int = 8,
                 channels: tuple[int, ...] = (16, 32, 64), strides: tuple[int, ...] = (2, 2)):
        super().__init__()
        from monai.networks.nets import UNet

        self.phases = in_channels
        # A learned phase embedding lets the shared encoder know which phase it is looking at.
        self.phase_embedding = nn.Parameter(torch.zeros(in_channels, features, 1, 1, 1))
        self.encoder = nn.Sequential(_block(1, features), _block(features, features))
        self.score = nn.Conv3d(features, 1, 1)
        self.decoder = UNet(3, features + in_channels, out_channels, channels=tuple(channels), strides=tuple(strides),
                            num_res_units=1, norm="instance")
        self.last_attention: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, p = x.shape[:2]
        per_phase = self.encoder(x.reshape(b * p, 1, *x.shape[2:])).reshape(b, p, -1, *x.shape[2:])
        per_phase = per_phase + self.phase_embedding[None]
        scores = self.score(per_phase.reshape(b * p, -1, *x.shape[2:])).reshape(b, p, 1, *x.shape[2:])
        weights = torch.softmax(scores, dim=1)
        self.last_attention = weights[:, :, 0].detach()
        fused = (weights * per_phase).sum(dim=1)
        return self.decoder(torch.cat([fused, x], dim=1))


class ConvLSTM3dCell(nn.Module):
    """A convolutional LSTM cell on 3D feature maps: gates from one 3x3x3 convolution of ``[x, h]``."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3):
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv3d(in_channels + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            # Forget-gate bias 1: the cell starts out keeping what earlier phases showed.
            self.gates.bias[hidden:2 * hidden].fill_(1.0)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = torch.chunk(self.gates(torch.cat([x, h], dim=1)), 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTMSegNet(nn.Module):
    """Shared per-phase 3D encoder (full and half resolution), a ConvLSTM over the phases at half
    resolution, and a decoder that upsamples the last hidden state with skips from every phase's
    full-resolution features. Spatial sizes must be even."""

    def __init__(self, in_channels: int, out_channels: int, features: int = 8, hidden: int = 16):
        super().__init__()
        self.phases = in_channels
        self.stem = nn.Sequential(_block(1, features), _block(features, features))
        self.down = nn.Sequential(_block(features, 2 * features, stride=2), _block(2 * features, 2 * features))
        self.cell = ConvLSTM3dCell(2 * features, hidden)
        self.up = nn.ConvTranspose3d(hidden, features, 2, stride=2)
        self.head = nn.Sequential(_block(features * (1 + in_channels) + in_channels, 2 * features),
                                  nn.Conv3d(2 * features, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state, skips = None, []
        for phase in range(x.shape[1]):
            full = self.stem(x[:, phase:phase + 1])
            skips.append(full)
            state = self.cell(self.down(full), state)
        return self.head(torch.cat([self.up(state[0]), *skips, x], dim=1))


def build_network(name: str, in_channels: int, out_channels: int, **args: Any) -> nn.Module:
    """A network by name (``MODEL_NAMES``) with ``DEFAULT_ARGS`` updated by ``args``."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown segmentation model {name!r}; choose from {MODEL_NAMES}")
    merged = {**DEFAULT_ARGS[name], **args}
    if name == "unet":
        from monai.networks.nets import UNet

        return UNet(3, in_channels, out_channels, channels=tuple(merged["channels"]), strides=tuple(merged["strides"]),
                    num_res_units=int(merged["num_res_units"]), norm=merged["norm"])
    if name == "dynunet":
        from monai.networks.nets import DynUNet

        strides = list(merged["strides"])
        return DynUNet(3, in_channels, out_channels, kernel_size=list(merged["kernel_size"]), strides=strides,
                       upsample_kernel_size=strides[1:], filters=list(merged["filters"]),
                       norm_name=merged["norm_name"])
    if name == "segresnet":
        from monai.networks.nets import SegResNet

        return SegResNet(3, init_filters=int(merged["init_filters"]), in_channels=in_channels,
                         out_channels=out_channels, blocks_down=tuple(merged["blocks_down"]),
                         blocks_up=tuple(merged["blocks_up"]))
    if name == "cross_phase":
        return CrossPhaseAttentionNet(in_channels, out_channels, features=int(merged["features"]),
                                      channels=tuple(merged["channels"]), strides=tuple(merged["strides"]))
    return ConvLSTMSegNet(in_channels, out_channels, features=int(merged["features"]), hidden=int(merged["hidden"]))


# --- the model record: configuration + trained networks (one set per fold) -------------------------

PIPELINES = ("single", "two_stage")


@dataclass(frozen=True)
class SegConfig:
    """What defines a segmentation model and its training (recorded in the weights card).

    ``pipeline="single"``: one network ``model`` (phases in, background/liver/tumour out).
    ``pipeline="two_stage"``: a ``unet`` for the liver (background/liver) on the whole volume, then
    ``model`` (default ``cross_phase``) for tumour/not-tumour inside the liver's bounding box.
    """

    model: str = "unet"
    model_args: dict = field(default_factory=dict)
    pipeline: str = "single"
    phases: tuple[str, ...] = ("arterial", "portal", "delayed")
    spacing_mm: tuple[float, float, float] = (3.0, 2.5, 2.5)
    patch_size: tuple[int, int, int] = (32, 48, 48)
    window: str = "liver"
    iterations: int = 300
    batch_size: int = 2
    lr: float = 3e-3
    folds: int = 1
    seed: int = 0
    crop_ratios: tuple[float, float, float] = (1.0, 1.0, 2.0)
    roi_margin_mm: float = 10.0

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown segmentation model {self.model!r}; choose from {MODEL_NAMES}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {PIPELINES}, got {self.pipeline!r}")
        multiple = size_multiple(self.model, self.model_args)
        if any(int(n) % multiple for n in self.patch_size):
            raise ValueError(f"patch_size {tuple(self.patch_size)} must be multiples of {multiple} for {self.model}")
        object.__setattr__(self, "phases", tuple(self.phases))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))
        object.__setattr__(self, "patch_size", tuple(int(n) for n in self.patch_size))
        object.__setattr__(self, "crop_ratios", tuple(float(r) for r in self.crop_ratios))

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict) -> "SegConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) and k != "model_args" else v)
                      for k, v in data.items() if k in known})

    def stage_networks(self) -> dict[str, tuple[str, int, dict]]:
        """Network name -> (builder name, output classes, args) for one ensemble member."""
        if self.pipeline == "single":
            return {"main": (self.model, 3, dict(self.model_args))}
        return {"liver": ("unet", 2, {}), "tumour": (self.model, 2, dict(self.model_args))}


@dataclass(eq=False)
class SegModel:
    """A trained (or freshly initialised) segmentation model: config and one dict of networks per fold."""

    config: SegConfig
    members: list[dict[str, nn.Module]]
    info: dict = field(default_factory=dict)

    def eval(self) -> "SegModel":
        for member in self.members:
            for net in member.values():
                net.eval()
        return self


def new_member(config: SegConfig) -> dict[str, nn.Module]:
    """Freshly initialised networks for one ensemble member."""
    return {key: build_network(name, len(config.phases), classes, **args)
            for key, (name, classes, args) in config.stage_networks().items()}


def new_model(config: SegConfig, members: int = 1, seed: int | None = None) -> SegModel:
    """A randomly initialised model (``members`` folds), e.g. before training or for shape checks."""
    torch.manual_seed(config.seed if seed is None else seed)
    return SegModel(config, [new_member(config) for _ in range(members)]).eval()
