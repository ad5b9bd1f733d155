"""A trained MVI / grade classifier as a folder: ``weights.safetensors`` and ``card.json``. Loading never unpickles.

The card (see ``classify_train``) holds the model kind and network arguments, the task and classes,
the channels in input order, the crop size and spacing, the standardisations and the nomogram,
the training summary, the versions of the stack and the weights' sha256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_json
from ..errors import WsiHccError
from ..versions import stack_versions, utc_now

__all__ = ["save_classifier", "load_classifier", "CARD_FORMAT"]

CARD_FORMAT = "wsi_hcc.radiology.classifier/1"


def save_classifier(model, folder: str | Path) -> Path:
    """Write ``model`` (a ``ClassifierModel``) into ``folder`` (created); returns the folder."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = save({name: value.detach().contiguous() for name, value in model.network.state_dict().items()})
    atomic_write_bytes(folder / "weights.safetensors", weights)
    card = dict(model.card)
    card.update({"format": CARD_FORMAT, "weights_sha256": hashlib.sha256(weights).hexdigest(),
                 "versions": stack_versions(), "created": utc_now()})
    atomic_write_json(folder / "card.json", card)
    return folder


def load_classifier(folder: str | Path):
    """Read a folder written by :func:`save_classifier` (JSON and safetensors only); the network is in eval mode."""
    from safetensors.torch import load

    from .classify_train import ClassifierModel, build_model_network

    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    try:
        card = json.loads((folder / "card.json").read_text())
        weights = (folder / "weights.safetensors").read_bytes()
    except FileNotFoundError as exc:
        raise WsiHccError(f"{folder}: not a classifier folder ({Path(exc.filename).name} missing); pass the model/ "
                          "folder that wsi-hcc radiology train wrote") from None
    except json.JSONDecodeError:
        raise WsiHccError(f"{folder / 'card.json'}: damaged card (not JSON); retrain or restore the model") from None
    if card.get("format") != CARD_FORMAT:
        raise WsiHccError(f"{folder / 'card.json'}: format {card.get('format')!r} is not {CARD_FORMAT}; retrain with "
                          "this version of wsi-hcc")
    if hashlib.sha256(weights).hexdigest() != card.get("weights_sha256"):
        raise WsiHccError(f"{folder / 'weights.safetensors'}: checksum differs from the card; the weights were changed "
                          "or damaged")
    network = build_model_network(card["kind"], card["args"])
    network.load_state_dict(load(weights))
    network.eval()
    return ClassifierModel(network, card)
