"""Grad-CAM for any patch classifier, and heat-map overlays.

A small hook-based implementation rather than ``monai.visualize.GradCAM`` (whose maths it shares:
channel weights are the spatially averaged gradients of the class score, the map is
``relu(sum_k w_k A_k)`` upsampled to the input and scaled to [0, 1] per image) because MONAI's
explains one class for a whole batch, its default normaliser maps the strongest heat to 0 (its docs
say so: "this will flip magnitudes"), leaves its hooks registered on the model for good, switches
``inplace`` flags of the model's modules, and costs ~10 s to import here. This one explains a class
per tile, removes its hook after every call, and takes the gradient with ``torch.autograd.grad``,
so the model is left as it was. A slow test checks it against MONAI.

The layer is the card's ``cam_layer``; for cards without one, timm's last feature stage, else the
last module with a spatial (N, C, H>1, W>1) output.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wsi_hcc.models import ModelCard, to_model_input
from wsi_hcc.training.errors import TrainError
from wsi_hcc.viz.figures import figure_png
from wsi_hcc.viz.tiles import explanation_figure, heat_overlay

__all__ = ["GradCam", "find_cam_layer", "explain_tiles", "heat_overlay", "explanation_png"]


def find_cam_layer(model, card: ModelCard | None = None) -> str:
    """The module Grad-CAM reads: the card's ``cam_layer``, timm's last feature stage, or the last 4-D module."""
    import torch

    modules = dict(model.named_modules())
    name = card.cam_layer if card is not None else None
    if name:
        if name not in modules:
            raise TrainError(f"the card's cam_layer {name!r} is not a module of {card.architecture}")
        return name
    info = getattr(model, "feature_info", None)
    if info is not None:
        try:
            last = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
        except (KeyError, IndexError, TypeError, AttributeError):
            last = None
        if last and last in modules:
            return last
    order: list[str] = []
    hooks = [m.register_forward_hook(lambda mod, i, out, n=n: order.append(n)
                                     if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] > 1
                                     and out.shape[-2] > 1 else None)
             for n, m in modules.items() if n]
    px = card.input_px if card is not None else 224
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, px, px, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if not order:
        raise TrainError("the model has no layer with a spatial output for Grad-CAM; set cam_layer in its card")
    return order[-1]


class GradCam:
    """``cam(x, class_idx)`` -> (maps (N, H, W) in [0, 1] at the input's size, logits (N, K))."""

    def __init__(self, model, layer: str | None = None):
        self.model = model
        self.layer_name = layer or find_cam_layer(model, getattr(model, "card", None))
        self.layer = dict(model.named_modules())[self.layer_name]

    def __call__(self, x, class_idx: int | Sequence[int] | None = None):
        import torch
        import torch.nn.functional as F

        captured = {}

        def keep(_module, _inputs, output):
            captured["a"] = output

        was_training = self.model.training
        self.model.eval()
        handle = self.layer.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)  # a graph even when the weights are frozen
                logits = self.model(x)
                if class_idx is None:
                    index = logits.argmax(dim=1)
                else:
                    index = torch.as_tensor(class_idx, device=logits.device).reshape(-1).expand(len(logits))
                activation = captured["a"]
                score = logits.gather(1, index.view(-1, 1)).sum()
                (gradient,) = torch.autograd.grad(score, activation)
        finally:
            handle.remove()
            self.model.train(was_training)
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * activation).sum(dim=1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        low = cam.flatten(1).min(dim=1).values.view(-1, 1, 1)
        high = cam.flatten(1).max(dim=1).values.view(-1, 1, 1)
        cam = torch.where(high > low, (cam - low) / (high - low).clamp_min(1e-12), torch.zeros_like(cam))
        return cam.cpu().numpy(), logits.detach()


def explain_tiles(model, tiles, class_idx: int | Sequence[int] | None = None, layer: str | None = None,
                  device=None):
    """Grad-CAM of uint8 tiles (N, H, W, 3) through the model's card.

    Returns maps (N, H, W) at the tiles' own size and class probabilities (N, K).
    """
    import torch
    import torch.nn.functional as F

    device = torch.device(device) if device is not None else next(model.parameters()).device
    tiles = torch.as_tensor(tiles).to(device)
    x = to_model_input(tiles, model.card).contiguous()
    maps, logits = GradCam(model, layer)(x, class_idx)
    if maps.shape[-2:] != tuple(tiles.shape[1:3]):
        maps = F.interpolate(torch.from_numpy(maps)[:, None], size=tuple(tiles.shape[1:3]), mode="bilinear",
                             align_corners=False)[:, 0].clamp(0, 1).numpy()
    return maps, torch.softmax(logits.float(), dim=1).cpu().numpy()


def explanation_png(tile: np.ndarray, cam: np.ndarray, alpha: float = 0.45, title: str = "") -> bytes:
    """A PNG with the tile on the left, its Grad-CAM overlay on the right with a colour bar, and
    ``title`` (``wsi_hcc.viz.tiles.explanation_title``: the class explained and its score) on top."""
    return figure_png(explanation_figure(tile, cam, title, alpha))
