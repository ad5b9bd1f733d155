"""A segmentation model on disk: ``weights.safetensors`` (all folds) and ``card.json``. Loading never unpickles.

Tensor names are ``fold<k>.<network>.<parameter>`` (network ``main``, or ``liver`` and ``tumour``
for two-stage models). The card holds what inference needs besides the weights: the config
(model name and args, pipeline, phases and their order, spacing, patch size, CT window), the
classes, the number of folds, the training summary, the stack's versions and the weights' SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_json
from ..errors import WsiHccError
from ..versions import stack_versions, utc_now
from .seg_metrics import SEGMENT_CLASSES
from .segment_models import SegConfig, SegModel, new_member

__all__ = ["CARD_FORMAT", "save_seg_model", "load_seg_model"]

CARD_FORMAT = "wsi_hcc.radiology.segment/1"
WEIGHTS_NAME, CARD_NAME = "weights.safetensors", "card.json"


def save_seg_model(model: SegModel, folder: str | Path) -> Path:
    """Write ``weights.safetensors`` and ``card.json`` into ``folder`` (created); returns the folder."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"fold{k}.{name}.{key}": value.detach().contiguous().cpu()
               for k, member in enumerate(model.members) for name, net in member.items()
               for key, value in net.state_dict().items()}
    data = save(tensors)
    atomic_write_bytes(folder / WEIGHTS_NAME, data)
    card = {"format": CARD_FORMAT, "config": model.config.to_json(), "folds": len(model.members),
            "in_channels": len(model.config.phases), "phases": list(model.config.phases),
            "classes": {str(k): v for k, v in SEGMENT_CLASSES.items()},
            "normalisation": {"CT": f"window {model.config.window!r} (wsi_hcc.radiology.CT_WINDOWS) to [0, 1]",
                              "MR": "z-score"},
            "networks": {k: {"model": n, "classes": c, "args": a}
                         for k, (n, c, a) in model.config.stage_networks().items()},
            "weights_sha256": hashlib.sha256(data).hexdigest(), "versions": stack_versions(), "created": utc_now(),
            "info": model.info}
    atomic_write_json(folder / CARD_NAME, card)
    return folder


def _paths(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / WEIGHTS_NAME, path / CARD_NAME
    if path.suffix == ".json":
        return path.with_name(WEIGHTS_NAME), path
    # A weights file: its card is beside it, as card.json or <stem>.json.
    own = path.with_suffix(".json")
    return path, own if own.is_file() else path.with_name(CARD_NAME)


def load_seg_model(path: str | Path) -> SegModel:
    """Read a model folder (or its ``weights.safetensors`` / ``card.json``) written by :func:`save_seg_model`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    weights_path, card_path = _paths(path)
    try:
        card = json.loads(card_path.read_text())
        data = weights_path.read_bytes()
    except FileNotFoundError as exc:
        raise WsiHccError(f"{path}: not a segmentation model ({Path(exc.filename).name} missing); pass the folder "
                          f"that wsi-hcc radiology segment train wrote") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise WsiHccError(f"{card_path}: damaged card (not JSON); retrain or restore the model") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise WsiHccError(f"{card_path}: format {card.get('format') if isinstance(card, dict) else None!r} is not "
                          f"{CARD_FORMAT}; pass a model written by wsi-hcc radiology segment train")
    if hashlib.sha256(data).hexdigest() != card.get("weights_sha256"):
        raise WsiHccError(f"{weights_path}: checksum differs from {card_path.name}; the weights were changed or "
                          "damaged")
    try:
        tensors = load(data)
    except SafetensorError as exc:
        raise WsiHccError(f"{weights_path}: not a safetensors file ({str(exc)[:80]})") from None
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
