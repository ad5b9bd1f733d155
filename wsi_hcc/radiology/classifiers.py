"""Small 3D CNN classifiers on tumour + ring crops, built from MONAI blocks, with region-aware pooling.

Every network maps ``x`` ``(B, C, z, y, x)`` (image channels, then the tumour and ring masks) to
logits ``(B, n_classes)`` and names its Grad-CAM layers in ``cam_layers``. Kinds:

- ``single`` / ``multiphase`` (:class:`CropNet`): one encoder over the stacked channels (one phase,
  or all phases as channels: early fusion);
- ``fusion`` (:class:`LateFusionNet`, after Lei 2024): one encoder and head per modality (CT, MR);
  the logits are averaged over the modalities present. ``available`` ``(B, M)`` flags a missing
  modality, whose branch is then skipped (in training too), so the prediction is exactly the
  other branch's;
- ``ted`` (:class:`TedNet`, after Zhou 2022): stage 1 predicts radiological attributes (tumour
  size, heterogeneity, satellites) from the image embedding; stage 2 gates the embedding with those
  predicted attributes (attention) and classifies from both;
- ``mcf`` (:class:`McfNet`, after Yang 2019): one 3D stream per phase, fused by channel
  concatenation at two depths into a shared stream.

Region-aware pooling. The feature maps stay at the crop's resolution and are pooled inside the
masks the crop carries (``pools``: mean / max inside the tumour / the peritumoral ring). The
defaults follow the task: MVI is a finding at the tumour margin, so MVI models pool the ring
(mean and max); grade is a property of the tumour, so grade models pool the tumour (mean and max)
and the ring mean. The convolutions still see the tumour wherever it lies within their reach.
Why this much structure: on phantom cohorts of 40 training cases, a global pooling, a strided
encoder or batch normalisation let the network memorise tumour texture and noise instead of the
2-voxel satellite nodules in the ring (held-out AUC about 0.5 in our trials, train AUC 1.0), and
pooling the tumour mean beside the ring made training depend on the seed (held-out AUC 0.5 to 1.0
over four seeds). Pooling by region, one or two unnormalised convolutions and inputs of unit scale
(see ``crops``) learn them from 40 cases. Grad-CAM's test on these models (energy per voxel in the
ring above the far liver) therefore checks that the feature maps respond to the satellites and not
to vessels or noise elsewhere, not that the network found the ring on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["Encoder3d", "CropNet", "LateFusionNet", "TedNet", "McfNet", "build_network", "CNN_KINDS", "region_pool"]

CNN_KINDS = ("single", "multiphase", "fusion", "ted", "mcf")


def _conv(in_channels: int, out_channels: int) -> Convolution:
    # Leaky: with a max pooled over a small region, a plain ReLU unit that starts negative there
    # never recovers (no gradient), and training then depended on the seed.
    return Convolution(3, in_channels, out_channels, kernel_size=3, act=("LEAKYRELU", {"negative_slope": 0.1}),
                       norm=None)


POOLS = ("tumour_mean", "tumour_max", "ring_mean", "ring_max")


def region_pool(features: torch.Tensor, tumour: torch.Tensor, ring: torch.Tensor,
                pools: Sequence[str] = ("ring_mean", "ring_max")) -> torch.Tensor:
    """``(B, len(pools) * C)``: the ``pools`` (region_statistic) of ``features`` ``(B, C, z, y, x)``.

    ``tumour`` and ``ring`` are ``(B, 1, z, y, x)`` masks on the same grid; the max of an empty
    region is 0.
    """
    masks = {"tumour": tumour, "ring": ring}
    pooled = []
    for pool in pools:
        region, _, statistic = pool.partition("_")
        mask = masks[region]
        if statistic == "mean":
            pooled.append((features * mask).sum(dim=(2, 3, 4)) / mask.sum(dim=(2, 3, 4)).clamp_min(1.0))
        else:
            inside = torch.where(mask > 0, features, torch.full_like(features, float("-inf"))).amax(dim=(2, 3, 4))
            pooled.append(torch.where(torch.isfinite(inside), inside, torch.zeros_like(inside)))
    return torch.cat(pooled, dim=1)


def check_pools(pools: Sequence[str]) -> tuple[str, ...]:
    unknown = [p for p in pools if p not in POOLS]
    if unknown or not pools:
        raise ValueError(f"pools must be a non-empty subset of {POOLS}, got {list(pools)}")
    return tuple(pools)


class Encoder3d(nn.Module):
    """Unstrided conv blocks (``widths``) on ``x``, pooled by region; masks at ``mask_channels`` of ``x``."""

    def __init__(self, in_channels: int, mask_channels: Sequence[int], widths: Sequence[int] = (8,),
                 pools: Sequence[str] = ("ring_mean", "ring_max")):
        super().__init__()
        layers, previous = [], in_channels
        for width in widths:
            layers.append(_conv(previous, width))
            previous = width
        self.blocks = nn.Sequential(*layers)
        self.tumour_channel, self.ring_channel = (int(c) for c in mask_channels)
        self.pools = check_pools(pools)
        self.out_features = len(self.pools) * previous

    @property
    def cam_layer(self) -> str:
        return f"blocks.{len(self.blocks) - 1}.conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tumour = x[:, self.tumour_channel:self.tumour_channel + 1]
        ring = x[:, self.ring_channel:self.ring_channel + 1]
        return region_pool(self.blocks(x), tumour, ring, self.pools)


class CropNet(nn.Module):
    """``single`` / ``multiphase``: one encoder over all channels, a linear head."""

    def __init__(self, in_channels: int, mask_channels: Sequence[int], n_classes: int = 2, widths: Sequence[int] = (8,),
                 pools: Sequence[str] = ("ring_mean", "ring_max"), dropout: float = 0.2):
        super().__init__()
        self.encoder = Encoder3d(in_channels, mask_channels, widths, pools)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.out_features, n_classes))

    @property
    def cam_layers(self) -> list[str]:
        return [f"encoder.{self.encoder.cam_layer}"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


class LateFusionNet(nn.Module):
    """``fusion``: per-modality encoder + head; logits averaged over the available modalities.

    ``branch_channels[m]`` lists the input channel indices branch ``m`` reads: its modality's
    phases, then the tumour and ring masks (the last two).
    """

    def __init__(self, branch_channels: dict[str, Sequence[int]], n_classes: int = 2, widths: Sequence[int] = (8,),
                 pools: Sequence[str] = ("ring_mean", "ring_max"), dropout: float = 0.2):
        super().__init__()
        self.modalities = list(branch_channels)
        for name, index in branch_channels.items():
            self.register_buffer(f"index_{name}", torch.as_tensor(list(index), dtype=torch.long), persistent=False)
        self.encoders = nn.ModuleDict()
        for m in self.modalities:
            n = len(branch_channels[m])
            self.encoders[m] = Encoder3d(n, (n - 2, n - 1), widths, pools)
        self.heads = nn.ModuleDict({m: nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoders[m].out_features,
                                                                                    n_classes))
                                    for m in self.modalities})

    @property
    def cam_layers(self) -> list[str]:
        return [f"encoders.{m}.{self.encoders[m].cam_layer}" for m in self.modalities]

    def branch_logits(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """``(B, n_classes)``: one branch's logits."""
        return self.heads[modality](self.encoders[modality](x.index_select(1, getattr(self, f"index_{modality}"))))

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        if available is None:
            return torch.stack([self.branch_logits(x, m) for m in self.modalities], dim=1).mean(dim=1)
        available = available.to(torch.bool)
        if bool((~available.any(dim=1)).any()):
            raise ValueError("every sample needs at least one available modality")
        total, count = None, available.sum(dim=1, keepdim=True).to(x.dtype)
        for j, modality in enumerate(self.modalities):
            rows = available[:, j].nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            # Only the samples that have this modality enter its branch, so nothing about a missing
            # modality (not even its zero filling) reaches the output or the gradients.
            logits = self.branch_logits(x.index_select(0, rows), modality)
            part = torch.zeros(x.shape[0], logits.shape[1], dtype=logits.dtype, device=logits.device)
            part = part.index_add(0, rows, logits)
            total = part if total is None else total + part
        return total / count


class TedNet(nn.Module):
    """``ted``: attributes from the embedding (stage 1), attribute-gated embedding -> class (stage 2).

    ``forward`` returns the class logits; ``forward_with_attributes`` also the predicted
    (standardised) attributes, for the attribute loss.
    """

    def __init__(self, in_channels: int, mask_channels: Sequence[int], n_attributes: int, n_classes: int = 2,
                 widths: Sequence[int] = (8,), pools: Sequence[str] = ("ring_mean", "ring_max"), dropout: float = 0.2):
        super().__init__()
        self.encoder = Encoder3d(in_channels, mask_channels, widths, pools)
        features = self.encoder.out_features
        self.attribute_head = nn.Linear(features, n_attributes)
        self.gate = nn.Sequential(nn.Linear(n_attributes, features), nn.Sigmoid())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features + n_attributes, n_classes))

    @property
    def cam_layers(self) -> list[str]:
        return [f"encoder.{self.encoder.cam_layer}"]

    def forward_with_attributes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.encoder(x)
        attributes = self.attribute_head(embedding)
        gated = embedding * self.gate(attributes)
        return self.head(torch.cat([gated, attributes], dim=1)), attributes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attributes(x)[0]


class McfNet(nn.Module):
    """``mcf``: a stream per phase (its channel + the masks), concatenated into a fused stream at two depths.

    Depth 1 concatenates the streams' first maps into the fused stream; depth 2 concatenates the
    fused map with the streams' second maps. ``phase_channels`` and ``mask_channels`` (tumour,
    ring) are input channel indices.
    """

    def __init__(self, phase_channels: Sequence[int], mask_channels: Sequence[int], n_classes: int = 3,
                 stream_widths: Sequence[int] = (4, 4), fused_widths: Sequence[int] = (8, 8),
                 pools: Sequence[str] = ("tumour_mean", "tumour_max", "ring_mean"),
                 dropout: float = 0.2):
        super().__init__()
        self.n_phases = len(phase_channels)
        for i, channel in enumerate(phase_channels):
            self.register_buffer(f"index_{i}", torch.as_tensor([channel, *mask_channels], dtype=torch.long),
                                 persistent=False)
        self.tumour_channel, self.ring_channel = (int(c) for c in mask_channels)
        self.pools = check_pools(pools)
        s0, s1 = stream_widths
        f0, f1 = fused_widths
        stream_in = 1 + len(mask_channels)
        self.streams_1 = nn.ModuleList([_conv(stream_in, s0) for _ in range(self.n_phases)])
        self.streams_2 = nn.ModuleList([_conv(s0, s1) for _ in range(self.n_phases)])
        self.fuse_1 = _conv(self.n_phases * s0, f0)
        self.fuse_2 = _conv(f0 + self.n_phases * s1, f1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(len(self.pools) * f1, n_classes))

    @property
    def cam_layers(self) -> list[str]:
        return ["fuse_2.conv"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = [stream(x.index_select(1, getattr(self, f"index_{i}"))) for i, stream in enumerate(self.streams_1)]
        second = [stream(h) for stream, h in zip(self.streams_2, first)]
        fused = self.fuse_1(torch.cat(first, dim=1))
        fused = self.fuse_2(torch.cat([fused, *second], dim=1))
        tumour = x[:, self.tumour_channel:self.tumour_channel + 1]
        ring = x[:, self.ring_channel:self.ring_channel + 1]
        return self.head(region_pool(fused, tumour, ring, self.pools))


def build_network(kind: str, args: dict) -> nn.Module:
    """A network from its kind and the JSON-ready arguments stored on the model card."""
    pools = tuple(args["pools"])
    if kind in ("single", "multiphase"):
        return CropNet(args["in_channels"], args["mask_channels"], args["n_classes"], args["widths"], pools)
    if kind == "fusion":
        return LateFusionNet({m: list(v) for m, v in args["branch_channels"].items()}, args["n_classes"],
                             args["widths"], pools)
    if kind == "ted":
        return TedNet(args["in_channels"], args["mask_channels"], args["n_attributes"], args["n_classes"],
                      args["widths"], pools)
    if kind == "mcf":
        return McfNet(args["phase_channels"], args["mask_channels"], args["n_classes"], args["stream_widths"],
                      args["fused_widths"], pools)
    raise ValueError(f"unknown network kind {kind!r}; choose from {CNN_KINDS}")
