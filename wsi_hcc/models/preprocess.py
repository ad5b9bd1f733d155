"""Turn uint8 tiles into what a model's card says it was trained on, on the tiles' device."""

from __future__ import annotations

from wsi_hcc.models.card import ModelCard

__all__ = ["to_model_input"]


def to_model_input(tiles, card: ModelCard, dtype=None):
    """``tiles``: uint8 tensor (N, H, W, 3) RGB on any device -> float (N, 3, input_px, input_px).

    Colour conversion happens on the device the tiles are on, so a GPU run ships uint8 (4x fewer
    bytes) across the bus. Tiles of another size are resized with antialiasing: same field of view,
    the card's pixel count.
    """
    import torch
    import torch.nn.functional as F

    if tiles.dtype != torch.uint8 or tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(f"expected uint8 tiles (N, H, W, 3), got {tuple(tiles.shape)} {tiles.dtype}")
    dtype = dtype or torch.float32
    x = tiles.permute(0, 3, 1, 2)
    if card.channel_order == "BGR":
        x = x.flip(1)
    x = x.to(dtype)
    if x.shape[-1] != card.input_px or x.shape[-2] != card.input_px:
        x = F.interpolate(x, size=(card.input_px, card.input_px), mode="bilinear", antialias=True,
                          align_corners=False)
    mean = torch.tensor(card.mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(card.std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    # (x * scale - mean) / std as one multiply-add written over x: on a CPU, allocating (and
    # faulting in) a fresh batch-sized tensor per step cost more than the arithmetic.
    x = x.contiguous(memory_format=torch.channels_last)
    return torch.addcmul(-mean / std, x, card.scale / std, out=x)
