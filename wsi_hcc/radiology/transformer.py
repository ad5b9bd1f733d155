"""``transformer``: a 3D vision transformer on the tumour + ring crop (after Cao 2023, MVI-TR), from MONAI blocks.

Inputs as the CNN kinds (``classifiers``): the phases as channels, then the tumour and ring masks,
on a cube crop whose side is a multiple of ``patch_vox``. The network:

1. a convolution stem (one unstrided 3x3x3 convolution, leaky ReLU) and region-aware tokens: per
   ``patch_vox``-voxel cube, the maximum of each stem map inside the tumour and inside the ring,
   with the cube's tumour and ring shares (a convolutional tokeniser, as in hybrid ViTs and Hassani
   2021's compact transformers for small data sets);
2. MONAI's ``ViT`` (``monai.networks.nets.ViT``: patch size 1 on that token grid, learnt position
   embeddings, ``layers`` pre-norm transformer blocks of ``heads`` self-attention heads);
3. the tokens back on their grid, pooled by region as the CNNs are (``region_pool``): means
   weighted by each patch's share of the tumour or the ring, maxima over the patches that touch it;
   then a linear head.

Grad-CAM hooks the stem convolution (full resolution, as the CNN kinds' last convolution). On the
token grid instead, the map lit the far liver and the air (0 of 8 held-out MVI phantoms with more
CAM per voxel in the ring than in the far liver): Grad-CAM sums the weighted token maps
everywhere, and tokens away from the tumour carry position embeddings and attention output that
the readout never pools. On the stem, the map sits on the tumour (5x the far liver per voxel); the
ring equals the far liver per voxel (ring above far liver in 5 of 8 cases).

Why this much structure, on the MVI phantoms (56 cases, 39 training, seed 7, crop 24 x 2 mm, 60
epochs, one split): the stem followed by MONAI's linear 4-voxel patch embedding reached held-out AUC
0.85 (lr 1e-2); max-pooling the stem maps over the whole patch, where the bright tumour shares a
patch with the 2-voxel satellites, 0.53 (lr 1e-2) and 0.69 (lr 3e-3); maxima per tumour, ring and
the rest of the patch 0.61 (train AUC 0.94: the rest memorised noise); per tumour and ring, 1.0
(0.96 with training seed 1; grade on the same cohort 0.96), at ``transformer_lr`` 3e-3.

So attention mixes evidence across the whole crop (a satellite token can attend to the tumour it
belongs to), while the readout, like the CNNs', looks where the task's finding lives (ring for MVI).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.classifiers import _conv, check_pools, region_pool

__all__ = ["VitCropNet", "check_transformer_crop"]


def check_transformer_crop(size_vox: int, patch_vox: int) -> None:
    """A one-line error unless the crop side is a whole number of patches (two or more)."""
    if size_vox % patch_vox or size_vox // patch_vox < 2:
        raise WsiHccError(f"the transformer cuts the crop into {patch_vox}-voxel patches: a crop of {size_vox} "
                          f"voxels does not divide; use --crop-size {max(2, round(size_vox / patch_vox)) * patch_vox}")


class VitCropNet(nn.Module):
    """Conv stem -> MONAI ViT tokens -> tokens on the patch grid -> region pooling -> linear head."""

    def __init__(self, in_channels: int, mask_channels: Sequence[int], crop_vox: int, n_classes: int = 2,
                 patch_vox: int = 4, stem_width: int = 8, hidden: int = 32, layers: int = 2, heads: int = 4,
                 mlp: int = 64, pools: Sequence[str] = ("ring_mean", "ring_max"), dropout: float = 0.2):
        from monai.networks.nets import ViT

        super().__init__()
        check_transformer_crop(crop_vox, patch_vox)
        self.tumour_channel, self.ring_channel = (int(c) for c in mask_channels)
        self.patch_vox = int(patch_vox)
        self.grid = crop_vox // patch_vox
        self.stem = _conv(in_channels, stem_width)
        self.vit = ViT(in_channels=2 * stem_width + 2, img_size=(self.grid,) * 3, patch_size=1, hidden_size=hidden,
                       mlp_dim=mlp, num_layers=layers, num_heads=heads, classification=False, dropout_rate=0.0,
                       spatial_dims=3)
        self.pools = check_pools(pools)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(len(self.pools) * hidden, n_classes))

    @property
    def cam_layers(self) -> list[str]:
        return ["stem.conv"]

    def _region_maxima(self, maps: torch.Tensor, tumour: torch.Tensor, ring: torch.Tensor) -> torch.Tensor:
        """Per patch, the maximum of each stem map inside the tumour and inside the ring (0 where absent)."""
        out = []
        for mask in (tumour, ring):
            inside = nn.functional.max_pool3d(torch.where(mask > 0, maps, torch.full_like(maps, float("-inf"))),
                                              self.patch_vox)
            out.append(torch.where(torch.isfinite(inside), inside, torch.zeros_like(inside)))
        return torch.cat(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tumour = x[:, self.tumour_channel:self.tumour_channel + 1]
        ring = x[:, self.ring_channel:self.ring_channel + 1]
        # Share of each patch inside the tumour and the ring: token inputs, and the pooling weights.
        share = nn.functional.avg_pool3d(torch.cat([tumour, ring], dim=1), self.patch_vox)
        tokens, _ = self.vit(torch.cat([self._region_maxima(self.stem(x), tumour, ring), share], dim=1))
        g = self.grid
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], g, g, g)
        return self.head(region_pool(grid, share[:, :1], share[:, 1:], self.pools))
