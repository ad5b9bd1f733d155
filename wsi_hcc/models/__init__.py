"""Patch models: a registry of backbones with model cards, and safe local weight loading."""

from __future__ import annotations

from wsi_hcc.models.card import ModelCard, tiling_from_card
from wsi_hcc.models.livernet_entry import LIVERNET
from wsi_hcc.models.preprocess import to_model_input
from wsi_hcc.models.registry import (
    BackboneEntry,
    card_for,
    create_backbone,
    get_entry,
    list_backbones,
    register_backbone,
)
from wsi_hcc.models.resnet import RESNET34
from wsi_hcc.models.weights import (
    MODEL_FOLDER_FORMAT,
    WeightsError,
    card_from_weights,
    file_sha256,
    read_model_folder,
    read_state_dict,
    save_model_folder,
    save_weights,
    state_sha256,
    weights_bytes,
    weights_sha256,
)

__all__ = ["ModelCard", "BackboneEntry", "WeightsError", "create_backbone", "register_backbone", "list_backbones",
           "get_entry", "card_for", "tiling_from_card", "to_model_input", "save_weights", "read_state_dict",
           "card_from_weights", "file_sha256", "state_sha256", "weights_bytes", "weights_sha256",
           "MODEL_FOLDER_FORMAT", "save_model_folder", "read_model_folder"]

register_backbone(RESNET34)
register_backbone(LIVERNET)
