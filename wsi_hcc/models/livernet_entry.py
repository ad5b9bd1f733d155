"""LiverNet's registry entry: its data contract and the authors' Keras ``.h5`` weights."""

from __future__ import annotations

from wsi_hcc.models.card import ModelCard
from wsi_hcc.models.registry import BackboneEntry

__all__ = ["LIVERNET", "KMC_CLASS_NAMES"]

# The release labels classes by sorted folder name without publishing the names; this order is the
# grading the paper describes (our spec), not something the weight files state.
KMC_CLASS_NAMES = ("non-cancerous", "low grade", "medium grade", "high grade")


def _build_livernet(num_classes: int, **kwargs):
    from wsi_hcc.models.livernet import LiverNet

    return LiverNet(num_classes=num_classes, **kwargs)


def _load_keras(path):
    from wsi_hcc.models.keras_h5 import load_livernet_keras_h5

    return load_livernet_keras_h5(path)


LIVERNET = BackboneEntry(
    name="livernet",
    build=_build_livernet,
    card=ModelCard(architecture="livernet", num_classes=4, class_names=KMC_CLASS_NAMES, feature_dim=256,
                   input_px=224, tile_px=224, target_mpp=0.5, channel_order="BGR", scale=1.0 / 255.0,
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), cam_layer="aspp3",
                   notes="Aatresh 2021 LiverNet, trained graph; the release does not state the scanning "
                         "resolution of its 224 px patches: 0.5 um/px is assumed"),
    classifier="head.classifier",
    foreign_loaders={".h5": _load_keras},
)
