"""LiverNet's registry entry: its data contract and the authors' Keras ``.h5`` weights."""

from __future__ import annotations

from dataclasses import replace

from wsi_hcc.models.card import ModelCard
from wsi_hcc.models.registry import BackboneEntry

__all__ = ["LIVERNET", "KMC_CLASS_NAMES", "KMC_CARD", "TCGA_CARD"]

# The release labels each class by the position of its folder in sorted(os.listdir()) and never
# publishes the folder names. With the paper's names (non-cancerous, low, medium, high grade), sorted
# order gives this; the weights agree (normal GTEx liver tiles score 0.96-0.99 on index 3).
KMC_CLASS_NAMES = ("high grade", "low grade", "medium grade", "non-cancerous")
_ASSUMED_MPP = ("the release does not state the scanning resolution of its 224 px patches: 0.5 um/px is "
                "assumed")
KMC_CARD = ModelCard(
    architecture="livernet", num_classes=4, class_names=KMC_CLASS_NAMES, feature_dim=256, input_px=224,
    tile_px=224, target_mpp=0.5, channel_order="BGR", scale=1.0 / 255.0, mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0), cam_layer="aspp3", class_names_source="inferred", mpp_source="assumed",
    notes="Aatresh 2021 LiverNet (KMC grading), trained graph. Class names inferred: the release numbers "
          "classes by sorted folder name without publishing the names; sorting the paper's names gives this "
          "order, and normal GTEx liver tiles score 0.96-0.99 on index 3 (non-cancerous). " + _ASSUMED_MPP,
    extra={"training_data": "KMC (Kasturba Medical College), not public; real H&E",
           "source": "github.com/Aaatresh/LiverNet f33e9b2, weights/KMC/LiverNet_test_fold1_weights.h5",
           "licence": "README says MIT; no licence file in the repository"})
TCGA_CARD = replace(
    KMC_CARD, num_classes=3, class_names=("class_0", "class_1", "class_2"), class_names_source="unnamed",
    notes="Aatresh 2021 LiverNet (TCGA-LIHC), trained graph. The release publishes no names for its 3 classes. "
          + _ASSUMED_MPP,
    extra={**KMC_CARD.extra, "training_data": "a TCGA-LIHC subset; real H&E",
           "source": "github.com/Aaatresh/LiverNet f33e9b2, weights/TCGA/LiverNet_test_fold1_weights.h5"})


def _build_livernet(num_classes: int, **kwargs):
    from wsi_hcc.models.livernet import LiverNet

    return LiverNet(num_classes=num_classes, **kwargs)


def _load_keras(path):
    from wsi_hcc.models.keras_h5 import load_livernet_keras_h5

    return load_livernet_keras_h5(path)


LIVERNET = BackboneEntry(
    name="livernet",
    build=_build_livernet,
    card=KMC_CARD,
    classifier="head.classifier",
    foreign_loaders={".h5": _load_keras},
    # the released files, by sha256: each gets its own card
    known_weights={"09486adef032b034716fb5716b240bb7d1159fd6803fb87c3bcc671b6e3dc46b": KMC_CARD,
                   "7c271f8bbf7d7c28e3285f8993814983020bb70fba5efc72455b4e37154ad627": TCGA_CARD},
)
