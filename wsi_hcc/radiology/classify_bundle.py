"""A trained MVI / grade classifier as a folder: ``weights.safetensors`` and ``card.json``. Loading never unpickles.

The card (see ``classify_train``) holds the model kind and network arguments, the task and classes,
the channels in input order, the crop size and spacing, the standardisations and the nomogram,
the training summary, the versions of the stack and the weights' sha256.
"""

from __future__ import annotations

from pathlib import Path

from wsi_hcc.utils.checked_weights import load_checked, save_checked

__all__ = ["save_classifier", "load_classifier", "CARD_FORMAT"]

CARD_FORMAT = "wsi_hcc.radiology.classifier/1"


def save_classifier(model, folder: str | Path) -> Path:
    """Write ``model`` (a ``ClassifierModel``) into ``folder`` (created); returns the folder."""
    return save_checked(folder, model.network.state_dict(), {**model.card, "format": CARD_FORMAT})


def load_classifier(folder: str | Path):
    """Read a folder written by :func:`save_classifier` (JSON and safetensors only); the network is in eval mode."""
    from wsi_hcc.radiology.classify_train import ClassifierModel, build_model_network

    card, tensors = load_checked(folder, card_format=CARD_FORMAT,
                                 kind="a classifier folder", writer="wsi-hcc radiology train")
    network = build_model_network(card["kind"], card["args"])
    network.load_state_dict(tensors)
    network.eval()
    return ClassifierModel(network, card)
