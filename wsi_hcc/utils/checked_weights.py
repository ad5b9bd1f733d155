"""A model as a folder: ``weights.safetensors`` and ``card.json``, the card naming the weights'
sha256. Writing is atomic; reading checks the format and the checksum and never unpickles.

The radiology segmentation models and classifiers and the survival models are stored this way;
each caller puts what its model needs into the card and rebuilds the model from card and tensors.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from wsi_hcc.errors import WsiHccError
from wsi_hcc.utils.atomic import atomic_write_bytes, atomic_write_json
from wsi_hcc.utils.versions import stack_versions, utc_now

__all__ = ["WEIGHTS_NAME", "CARD_NAME", "save_checked", "load_checked"]

WEIGHTS_NAME, CARD_NAME = "weights.safetensors", "card.json"


def save_checked(folder: str | Path, tensors: dict[str, Any], card: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``card`` (with the weights' sha256, the stack's versions and the time
    added) into ``folder`` (created); returns the folder."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = save({name: value.detach().contiguous().cpu() for name, value in tensors.items()})
    atomic_write_bytes(folder / WEIGHTS_NAME, data)
    atomic_write_json(folder / CARD_NAME, {**card, "weights_sha256": hashlib.sha256(data).hexdigest(),
                                           "versions": stack_versions(), "created": utc_now()})
    return folder


def load_checked(weights_path: Path, card_path: Path, *, card_format: str, kind: str,
                 writer: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card and tensors of a folder written by :func:`save_checked`.

    ``kind`` ("a survival model") and ``writer`` (the command that makes such folders) word the
    one-line errors: a missing file, a card that is not JSON or not ``card_format``, weights whose
    checksum differs from the card's, a file that is not safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        card = json.loads(card_path.read_text())
        data = weights_path.read_bytes()
    except FileNotFoundError as exc:
        raise WsiHccError(f"{card_path.parent}: not {kind} ({Path(exc.filename).name} missing); pass the folder "
                          f"that {writer} wrote") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WsiHccError(f"{card_path}: damaged card (not JSON); retrain or restore the model") from None
    found = card.get("format") if isinstance(card, dict) else None
    if found != card_format:
        raise WsiHccError(f"{card_path}: format {found!r} is not {card_format}; pass a model written by {writer} "
                          "with this version of wsi-hcc")
    if hashlib.sha256(data).hexdigest() != card.get("weights_sha256"):
        raise WsiHccError(f"{weights_path}: checksum differs from {card_path.name}; the weights were changed or "
                          "damaged")
    try:
        return card, load(data)
    except SafetensorError as exc:
        raise WsiHccError(f"{weights_path}: not a safetensors file ({str(exc)[:80]})") from None
