"""ResNet-34 for HCC vs non-HCC patches (Chen 2022), built by timm from random initialisation."""

from __future__ import annotations

from wsi_hcc.models.card import ModelCard
from wsi_hcc.models.registry import BackboneEntry

__all__ = ["RESNET34"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build_resnet34(num_classes: int, **kwargs):
    import timm

    return timm.create_model("resnet34", pretrained=False, num_classes=num_classes, **kwargs)


RESNET34 = BackboneEntry(
    name="resnet34",
    build=_build_resnet34,
    card=ModelCard(architecture="resnet34", num_classes=2, class_names=("non-HCC", "HCC"), feature_dim=512,
                   input_px=224, tile_px=224, target_mpp=0.5, channel_order="RGB",
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, cam_layer="layer4",
                   notes="Chen 2022 style HCC vs non-HCC patch classifier; train or load your own weights"),
    classifier="fc",
)
