"""A model as a folder: ``weights.safetensors`` and ``card.json``, the card naming the weights'
sha256 (and that of any other file the model needs) and its own (``card_sha256``, over the rest of
the card), so an edited card is refused rather than obeyed. Every file is written atomically, the
card last, so a killed run leaves no folder that loads. Reading checks the format and every checksum
and never unpickles.

Every model wsi-hcc writes is stored this way: MIL bundles, radiology segmentation models and
classifiers, survival models. Each caller puts what its model needs into the card and rebuilds
the model from card and tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsi_hcc.errors import WsiHccError
from wsi_hcc.utils.atomic import atomic_write_bytes, atomic_write_json, partial_path
from wsi_hcc.utils.versions import stack_versions, utc_now

__all__ = ["WEIGHTS_NAME", "CARD_NAME", "save_checked", "load_checked", "read_card", "model_folder_paths", "check_file",
           "file_sha256", "card_sha256"]

WEIGHTS_NAME, CARD_NAME = "weights.safetensors", "card.json"


def save_checked(folder: str | Path, tensors: dict[str, Any], card: dict[str, Any], *,
                 files: Mapping[str, bytes | Path] | None = None) -> Path:
    """Write ``tensors`` and ``card`` (with the weights' sha256, the stack's versions and the time
    added) into ``folder`` (created); returns the folder.

    ``files`` are other files the model needs, by name in the folder: bytes, or a path copied byte
    for byte. The card lists their sha256 under ``"files"``.
    """
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, content in (files or {}).items():
        if isinstance(content, bytes):
            atomic_write_bytes(folder / name, content)
        else:
            shutil.copyfile(content, partial_path(folder / name))
            os.replace(partial_path(folder / name), folder / name)
        sums[name] = file_sha256(folder / name)
    data = save({name: value.detach().contiguous().cpu() for name, value in tensors.items()})
    atomic_write_bytes(folder / WEIGHTS_NAME, data)
    extra = {"files": sums} if sums else {}
    card = {**card, **extra, "weights_sha256": hashlib.sha256(data).hexdigest(), "versions": stack_versions(),
            "created": utc_now()}
    atomic_write_json(folder / CARD_NAME, {**card, "card_sha256": card_sha256(card)})
    return folder


def card_sha256(card: Mapping[str, Any]) -> str:
    """The digest of a card's content (without its own ``card_sha256``), independent of layout."""
    content = {k: v for k, v in card.items() if k != "card_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_folder_paths(path: str | Path) -> tuple[Path, Path]:
    """The weights and card of a model given as its folder, its ``card.json`` or its weights file
    (whose card is beside it, as ``card.json`` or ``<stem>.json``)."""
    path = Path(path)
    if path.is_dir() or not path.suffix:
        return path / WEIGHTS_NAME, path / CARD_NAME
    if path.suffix == ".json":
        return path.with_name(WEIGHTS_NAME), path
    own = path.with_suffix(".json")
    return path, own if own.is_file() else path.with_name(CARD_NAME)


def read_card(path: str | Path, *, card_format: str, kind: str, writer: str) -> dict[str, Any]:
    """The checked card of a model folder without reading its weights (``path`` as
    :func:`model_folder_paths` takes it): what the model is, cheaply. Loading it still goes through
    :func:`load_checked`, which checks the files too."""
    _, card_path = model_folder_paths(path)
    card = _card_json(card_path, kind, writer)
    _check_card(card, card_path, card_format, writer)
    return card


def load_checked(path: str | Path, *, card_format: str, kind: str,
                 writer: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card and tensors of a model folder written by :func:`save_checked` (``path`` as
    :func:`model_folder_paths` takes it).

    ``kind`` ("a survival model") and ``writer`` (the command that makes such folders) word the
    one-line errors: a missing file, a card that is not JSON or not ``card_format``, weights or
    other files whose checksum differs from the card's, a file that is not safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    weights_path, card_path = model_folder_paths(path)
    card = _card_json(card_path, kind, writer)
    try:
        data = weights_path.read_bytes()
    except FileNotFoundError:
        raise WsiHccError(f"{card_path.parent}: not {kind} ({weights_path.name} missing); pass the folder "
                          f"that {writer} wrote") from None
    _check_card(card, card_path, card_format, writer)
    if hashlib.sha256(data).hexdigest() != card.get("weights_sha256"):
        raise WsiHccError(f"{weights_path}: checksum differs from {card_path.name}; the weights were changed or "
                          "damaged")
    for name, sha256 in (card.get("files") or {}).items():
        check_file(card_path.parent / name, sha256)
    try:
        return card, load(data)
    except SafetensorError as exc:
        raise WsiHccError(f"{weights_path}: not a safetensors file ({str(exc)[:80]})") from None


def _card_json(card_path: Path, kind: str, writer: str) -> Any:
    if not card_path.parent.exists():
        raise WsiHccError(f"{card_path.parent}: no such folder; pass the folder that {writer} wrote")
    try:
        return json.loads(card_path.read_text())
    except FileNotFoundError:
        raise WsiHccError(f"{card_path.parent}: not {kind} ({card_path.name} missing); pass the folder that {writer} "
                          "wrote") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WsiHccError(f"{card_path}: damaged card (not JSON); retrain or restore the model") from None


def _check_card(card: Any, card_path: Path, card_format: str, writer: str) -> None:
    """Refuse a card of another format, or one changed after it was written."""
    found = card.get("format") if isinstance(card, dict) else None
    if found == card_format and "card_sha256" in card and card["card_sha256"] != card_sha256(card):
        raise WsiHccError(f"{card_path}: the card was changed after it was written (card_sha256 differs); restore "
                          "the model folder or retrain")
    if found != card_format:
        raise WsiHccError(f"{card_path}: format {found!r} is not {card_format}; pass a model written by {writer} "
                          "with this version of wsi-hcc")


def check_file(path: Path, sha256: str) -> None:
    """Refuse, in one line, a file of a model folder that is missing or not the one its card names."""
    if not path.is_file() or file_sha256(path) != sha256:
        raise WsiHccError(f"{path}: missing or not the file the card names (sha256 differs); "
                          "copy the whole model folder again")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
