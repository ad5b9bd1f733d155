"""A segmentation model on disk: ``weights.safetensors`` (all folds) and ``card.json``. Loading never unpickles.

Tensor names are ``fold<k>.<network>.<parameter>`` (network ``main``, or ``liver`` and ``tumour``
for two-stage models). The card holds what inference needs besides the weights: the config
(model name and args, pipeline, phases and their order, spacing, patch size, CT window), the
classes, the number of folds, the training summary, the stack's versions and the weights' SHA-256.
"""

from __future__ import annotations

from pathlib import Path

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.seg_metrics import SEGMENT_CLASSES
from wsi_hcc.radiology.segment_models import SegConfig, SegModel, new_member
from wsi_hcc.utils.checked_weights import load_checked, model_folder_paths, read_card, save_checked

__all__ = ["CARD_FORMAT", "save_seg_model", "load_seg_model", "seg_model_phases"]

CARD_FORMAT = "wsi_hcc.radiology.segment/1"


def save_seg_model(model: SegModel, folder: str | Path) -> Path:
    """Write ``weights.safetensors`` and ``card.json`` into ``folder`` (created); returns the folder."""
    tensors = {f"fold{k}.{name}.{key}": value for k, member in enumerate(model.members)
               for name, net in member.items() for key, value in net.state_dict().items()}
    card = {"format": CARD_FORMAT, "config": model.config.to_json(), "folds": len(model.members),
            "in_channels": len(model.config.phases), "phases": list(model.config.phases),
            "classes": {str(k): v for k, v in SEGMENT_CLASSES.items()},
            "normalisation": {"CT": f"window {model.config.window!r} (wsi_hcc.radiology.CT_WINDOWS) to [0, 1]",
                              "MR": "z-score"},
            "networks": {k: {"model": n, "classes": c, "args": a}
                         for k, (n, c, a) in model.config.stage_networks().items()},
            "info": model.info}
    return save_checked(folder, tensors, card)


_CARD = {"card_format": CARD_FORMAT, "kind": "a segmentation model", "writer": "wsi-hcc radiology segment train"}


def seg_model_phases(path: str | Path) -> tuple[str, ...]:
    """The phases a saved model needs, in channel order, from its card alone (no weights are read)."""
    return tuple(SegConfig.from_json(read_card(path, **_CARD)["config"]).phases)


def load_seg_model(path: str | Path) -> SegModel:
    """Read a model folder (or its ``weights.safetensors`` / ``card.json``) written by :func:`save_seg_model`."""
    weights_path = model_folder_paths(path)[0]
    card, tensors = load_checked(path, **_CARD)
    config = SegConfig.from_json(card["config"])
    members = []
    for k in range(int(card["folds"])):
        member = new_member(config)
        for name, net in member.items():
            prefix = f"fold{k}.{name}."
            state = {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
            try:
                net.load_state_dict(state)
            except RuntimeError as exc:
                raise WsiHccError(f"{weights_path}: fold {k} {name} does not fit the card's network "
                                  f"({str(exc).splitlines()[0][:100]})") from None
            net.eval()
        members.append(member)
    return SegModel(config, members, dict(card.get("info") or {}))
