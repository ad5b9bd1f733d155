"""Resumable training state: saved atomically, loaded with ``torch.load(weights_only=True)``.

Everything that is not a tensor is kept as plain Python numbers, strings, lists and dicts, so no
pickled object is ever needed to resume. A checkpoint is written after every epoch and, within an
epoch, at most every ``checkpoint_minutes``; ``batch`` says how much of ``epoch`` it has done.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wsi_hcc.training.errors import TrainError
from wsi_hcc.utils.atomic import partial_path

__all__ = ["TrainState", "save_checkpoint", "load_checkpoint", "apply_checkpoint", "capture_rng", "restore_rng",
           "FORMAT"]

FORMAT = 1


@dataclass
class TrainState:
    """Where a run stands (no tensors: these travel next to the model and optimiser state).

    ``epoch`` is the 0-based epoch in progress and ``batch`` the batches of it already done;
    ``epoch_loss_sum``/``epoch_seen`` are the running training loss of that epoch.
    """

    config_digest: str
    epoch: int = 0
    batch: int = 0
    epoch_loss_sum: float = 0.0
    epoch_seen: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    stop_reason: str = ""


def capture_rng() -> dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: TrainState, model, optimizer, scaler=None) -> None:
    """Write model, optimiser, scaler, RNG and ``state`` to ``path`` via a temporary name."""
    import torch

    payload = {
        "format": FORMAT,
        "state": asdict(state),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "rng": capture_rng(),
    }
    tmp = partial_path(path)
    with open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, with ``state`` as a ``TrainState``; one-line errors for bad files."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle: all mean the same to a user
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TrainError(f"{path}: not a readable training checkpoint ({first}); delete it or pass --restart") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or "state" not in payload:
        raise TrainError(f"{path}: not a wsi-hcc training checkpoint (format {FORMAT}); pass --restart to start over")
    known = TrainState.__dataclass_fields__
    payload["state"] = TrainState(**{k: v for k, v in payload["state"].items() if k in known})
    return payload


def apply_checkpoint(payload: dict[str, Any], model, optimizer, scaler=None) -> TrainState:
    """Load a checkpoint's tensors into ``model``/``optimizer``/``scaler`` and restore the RNG."""
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    restore_rng(payload["rng"])
    return payload["state"]
