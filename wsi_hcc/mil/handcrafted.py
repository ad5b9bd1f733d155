"""A fixed colour/texture tile descriptor registered as a feature "backbone" (no learned weights).

Used by the synthetic proof (tests and ``benchmarks/bench_mil.py``) to make features that are known
to carry the synthetic tumour signal (larger, darker, crowded nuclei: more haematoxylin optical
density and more edges), so that test checks the MIL side - bag classification and attention
localisation - and not whether a randomly initialised CNN happens to separate the classes. It is not
a histology feature extractor for real slides.

Features (15 per tile), from RGB in [0, 1]: channel means (3) and standard deviations (3), mean
optical density per channel (3), the fraction of pixels whose summed optical density exceeds 0.6,
1.0, 1.5 and 2.0 (4), mean gradient magnitude (1) and the fraction of near-white pixels (1).
"""

from __future__ import annotations

import torch
from torch import nn

from wsi_hcc.models import BackboneEntry, ModelCard, get_entry, register_backbone

__all__ = ["ColourTextureFeatures", "colour_texture_entry", "register_colour_texture", "entry_for_card",
           "FEATURE_DIM"]

FEATURE_DIM = 15


class ColourTextureFeatures(nn.Module):
    """``x``: float (N, 3, H, W) RGB in [0, 1] (the card's mean 0, std 1, scale 1/255) -> (N, 15)."""

    def __init__(self, num_classes: int = 0):
        super().__init__()
        if num_classes:
            raise ValueError("colour_texture is a feature extractor only (num_classes=0)")
        self.register_buffer("od_thresholds", torch.tensor([0.6, 1.0, 1.5, 2.0]))
        self.num_features = FEATURE_DIM

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().clamp(1 / 255, 1)
        od = -torch.log(x)
        od_sum = od.sum(dim=1)  # (N, H, W)
        gray = x.mean(dim=1)
        gx = (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean(dim=(1, 2))
        gy = (gray[:, 1:, :] - gray[:, :-1, :]).abs().mean(dim=(1, 2))
        dark = (od_sum[:, None] > self.od_thresholds[None, :, None, None]).float().mean(dim=(2, 3))
        white = (gray > 0.85).float().mean(dim=(1, 2))
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3)), od.mean(dim=(2, 3)), dark * 4,
                          ((gx + gy) * 10)[:, None], white[:, None]], dim=1)


def colour_texture_entry(name: str = "colour_texture", target_mpp: float = 1.0, tile_px: int = 32) -> BackboneEntry:
    """The descriptor as a backbone entry for tiles of ``tile_px`` at ``target_mpp``, not registered."""
    card = ModelCard(architecture=name, num_classes=0, class_names=(), feature_dim=FEATURE_DIM, input_px=tile_px,
                     target_mpp=target_mpp, tile_px=tile_px,
                     notes="fixed colour/texture descriptor for synthetic tests; no learned weights")
    return BackboneEntry(name=name, build=lambda num_classes=0, **kw: ColourTextureFeatures(num_classes), card=card,
                         classifier="head")


def register_colour_texture(name: str = "colour_texture", target_mpp: float = 1.0, tile_px: int = 32) -> str:
    """Register the descriptor under ``name`` for tiles of ``tile_px`` at ``target_mpp`` (idempotent):
    for the code that makes features with it by name."""
    entry = colour_texture_entry(name, target_mpp, tile_px)
    try:
        existing = get_entry(name)
    except Exception:
        existing = None
    if existing is not None:
        if existing.card != entry.card:
            raise ValueError(f"backbone {name!r} is already registered with another card")
        return name
    register_backbone(entry)
    return name


def entry_for_card(card: dict) -> BackboneEntry | None:
    """The unregistered entry that builds the backbone a saved card describes when it is this
    descriptor (its name is only registered by the code that made the features), else None."""
    name = str(card.get("architecture", ""))
    if name.startswith("colour_texture"):
        return colour_texture_entry(name, float(card["target_mpp"]), int(card["tile_px"]))
    return None
