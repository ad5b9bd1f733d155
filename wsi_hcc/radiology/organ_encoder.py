"""A small strided 3D CNN encoder over a region box (``organ_box``), pooled inside the region's mask.

Input ``(B, C + 1, n, n, n)``: image channels, then the region mask (last). Three MONAI
convolutions (the first two with stride 2, leaky ReLU, no normalisation: full-batch Cox training
on tens of patients) and, per feature map, the mean inside the mask (downsampled to the map), so
the embedding describes the region's texture wherever it lies in the box. ``out_features`` wide.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["RegionEncoder"]


class RegionEncoder(nn.Module):
    """Strided conv blocks of ``widths`` -> masked mean per map: ``(B, widths[-1])``."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (8, 16, 16), strides: Sequence[int] = (2, 2, 1)):
        super().__init__()
        layers, previous = [], in_channels
        for width, stride in zip(widths, strides):
            layers.append(Convolution(3, previous, width, strides=stride, kernel_size=3,
                                      act=("LEAKYRELU", {"negative_slope": 0.1}), norm=None))
            previous = width
        self.blocks = nn.Sequential(*layers)
        self.out_features = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.blocks(x)
        mask = nn.functional.adaptive_avg_pool3d(x[:, -1:], maps.shape[2:])
        return (maps * mask).sum(dim=(2, 3, 4)) / mask.sum(dim=(2, 3, 4)).clamp_min(1e-6)
