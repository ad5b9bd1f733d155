"""Weights come from local files only, loaded without unpickling arbitrary objects.

Accepted: a model folder (``utils.checked_weights``: ``weights.safetensors`` and ``card.json``
holding the model card, as ``wsi-hcc train-patches`` writes), safetensors (ours carry the model card
in their metadata), PyTorch state dicts loaded with ``weights_only=True``, and whatever foreign
formats a registry entry knows (LiverNet's Keras ``.h5``). Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

from wsi_hcc.errors import WsiHccError
from wsi_hcc.models.card import ModelCard
from wsi_hcc.utils.atomic import atomic_write_bytes
from wsi_hcc.utils.checked_weights import file_sha256, load_checked, read_card, save_checked

__all__ = ["WeightsError", "MODEL_FOLDER_FORMAT", "file_sha256", "weights_sha256", "state_sha256", "read_state_dict",
           "save_weights", "weights_bytes", "save_model_folder", "read_model_folder",
           "card_from_weights"]

_CARD_KEY = "wsi_hcc_card"
MODEL_FOLDER_FORMAT = "wsi-hcc-patch-model/1"
_FOLDER = {"card_format": MODEL_FOLDER_FORMAT, "kind": "a patch model folder", "writer": "wsi-hcc train-patches"}
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


class WeightsError(WsiHccError):
    """A weights file is missing, unsafe or does not fit the model."""


def state_sha256(model) -> str:
    """Digest of a model's tensors, so outputs of randomly initialised models are told apart too."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy())
    return digest.hexdigest()


def _check_exists(path: Path) -> None:
    if not path.is_file() and not path.is_dir():
        raise WeightsError(f"{path}: weights file not found; pass a model folder or a local .safetensors, .pt/.pth or "
                           ".h5 file (nothing is downloaded)")


def read_state_dict(path: str | Path) -> dict:
    """Tensors of a safetensors or PyTorch file; unwraps ``{"state_dict": ...}``/``{"model": ...}``."""
    import torch

    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return read_model_folder(path)[1]
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    if path.suffix not in _TORCH_SUFFIXES:
        raise WeightsError(f"{path}: unknown weights format {path.suffix!r} for this backbone; use a model folder, "
                           ".safetensors, .pt, .pth or .bin (Keras .h5 files are LiverNet's: --arch livernet)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors take many forms; all mean the same thing to a user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"{path}: cannot be loaded safely as a state dict ({first}); "
                           "save it with torch.save(model.state_dict(), ...) or as safetensors") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
            loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{path}: holds no state dict of tensors")
    # DataParallel / DDP checkpoints prefix every key
    if loaded and all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module."):]: v for k, v in loaded.items()}
    return loaded


def card_from_weights(path: str | Path) -> ModelCard | None:
    """The card stored in a model folder or one of our safetensors files, or None for any other file."""
    path = Path(path)
    if path.is_dir():  # the card alone: the weights are read (and checked) when the model is built
        return _folder_card(read_card(path, **_FOLDER))
    if path.suffix != ".safetensors":
        return None
    _check_exists(path)
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({str(exc)[:80]}); save the weights "
                           "again") from None
    return ModelCard.from_dict(json.loads(meta[_CARD_KEY])) if _CARD_KEY in meta else None


def weights_bytes(model, card: ModelCard) -> bytes:
    """``model``'s weights with its card, as the bytes of a safetensors file."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save(state, metadata={_CARD_KEY: card.to_json()})


def save_weights(model, card: ModelCard, path: str | Path) -> str:
    """Write ``model``'s weights with its card as safetensors (atomically); returns the sha256."""
    data = weights_bytes(model, card)
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def save_model_folder(model, folder: str | Path, *, training: dict | None = None) -> Path:
    """``model`` (its tensors and its card) as a model folder; ``training`` says what it learnt from."""
    card = replace(model.card, weights_sha256=None)
    kind = "patch-classifier" if card.num_classes else "feature-extractor"
    return save_checked(folder, model.state_dict(), {"format": MODEL_FOLDER_FORMAT, "kind": kind,
                                                     "model_card": card.to_dict(), "training": training or {}})


def read_model_folder(path: Path) -> tuple[ModelCard, dict]:
    """The card (naming the weights' sha256) and tensors of a folder :func:`save_model_folder` wrote."""
    card, tensors = load_checked(path, **_FOLDER)
    return _folder_card(card), tensors


def _folder_card(card: dict) -> ModelCard:
    return replace(ModelCard.from_dict(card["model_card"]), weights_sha256=card["weights_sha256"])


def weights_sha256(path: str | Path) -> str:
    """What identifies weights: the sha256 of a weights file, or the one a model folder's card names."""
    path = Path(path)
    return card_from_weights(path).weights_sha256 if path.is_dir() else file_sha256(path)
