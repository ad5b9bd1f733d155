"""A trained survival model as a folder: ``weights.safetensors`` and ``card.json``. Loading never unpickles.

The card holds everything prediction needs besides the weights: feature names and order, the
standardisation fitted on the training rows, the risk-group cut-offs, the Breslow baseline survival,
the nomogram (if any), the config, the data description and the versions of the stack.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes, atomic_write_json
from ..errors import WsiHccError
from ..versions import stack_versions, utc_now
from .cox import BreslowBaseline, CoxModel
from .data import Standardizer
from .groups import RiskCutoffs
from .nomogram import Nomogram

__all__ = ["SurvivalModel", "save_model", "load_model", "CARD_FORMAT"]

CARD_FORMAT = "wsi_hcc.survival/1"
@dataclass
class SurvivalModel:
    """A fitted model (``cox`` or ``deepsurv``) with what turns its log hazards into groups and curves."""

    kind: str
    predictor: object  # CoxModel or DeepSurvModel: has log_hazard(features) and feature_names
    baseline: BreslowBaseline
    cutoffs: RiskCutoffs
    nomogram: Nomogram | None = None
    info: dict = field(default_factory=dict)  # config, data description, training summary

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.predictor.feature_names)

    def log_hazard(self, features: np.ndarray) -> np.ndarray:
        return self.predictor.log_hazard(features)


def _tensors(model: SurvivalModel) -> dict:
    import torch

    if model.kind == "cox":
        return {"coef": torch.as_tensor(model.predictor.coef, dtype=torch.float64)}
    return {name: value.detach().contiguous() for name, value in model.predictor.net.state_dict().items()}


def save_model(model: SurvivalModel, folder: str | Path) -> Path:
    """Write the model into ``folder`` (created); returns the folder."""
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = save(_tensors(model))
    atomic_write_bytes(folder / "weights.safetensors", weights)
    predictor = model.predictor
    card = {
        "format": CARD_FORMAT,
        "kind": model.kind,
        "feature_names": list(model.feature_names),
        "standardizer": {"mean": predictor.standardizer.mean.tolist(), "std": predictor.standardizer.std.tolist()},
        "risk": "log hazard ratio (linear predictor); higher = earlier event",
        "cutoffs": model.cutoffs.to_json(),
        "baseline": {"time": model.baseline.time.tolist(), "survival": model.baseline.survival.tolist()},
        "nomogram": None if model.nomogram is None else model.nomogram.to_json(),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "versions": stack_versions(),
        "created": utc_now(),
        **model.info,
    }
    if model.kind == "deepsurv":
        card["network"] = {"hidden": list(predictor.hidden), "dropout": predictor.dropout,
                           "best_epoch": predictor.best_epoch}
    atomic_write_json(folder / "card.json", card)
    return folder


def load_model(folder: str | Path) -> SurvivalModel:
    """Read a model folder written by :func:`save_model` (JSON and safetensors only)."""
    from safetensors.torch import load

    from .deepsurv import DeepSurvModel, DeepSurvNet

    folder = Path(folder)
    try:
        card = json.loads((folder / "card.json").read_text())
        weights_bytes = (folder / "weights.safetensors").read_bytes()
    except FileNotFoundError as exc:
        raise WsiHccError(f"{folder}: not a survival model folder ({Path(exc.filename).name} missing); pass the "
                          f"model/ folder that wsi-hcc survival train wrote") from None
    except json.JSONDecodeError:
        raise WsiHccError(f"{folder / 'card.json'}: damaged card (not JSON); retrain or restore the model") from None
    if card.get("format") != CARD_FORMAT:
        raise WsiHccError(f"{folder / 'card.json'}: format {card.get('format')!r} is not {CARD_FORMAT}; retrain "
                          f"with this version of wsi-hcc")
    if hashlib.sha256(weights_bytes).hexdigest() != card["weights_sha256"]:
        raise WsiHccError(f"{folder / 'weights.safetensors'}: checksum differs from the card; the weights were "
                          f"changed or damaged")
    tensors = load(weights_bytes)
    names = tuple(card["feature_names"])
    standardizer = Standardizer(np.asarray(card["standardizer"]["mean"], dtype=np.float64),
                                np.asarray(card["standardizer"]["std"], dtype=np.float64))
    if card["kind"] == "cox":
        predictor = CoxModel(standardizer, tensors["coef"].numpy().astype(np.float64), names)
    else:
        network = card["network"]
        net = DeepSurvNet(len(names), network["hidden"], network["dropout"])
        net.load_state_dict(tensors)
        net.eval()
        predictor = DeepSurvModel(standardizer, net, names, list(network["hidden"]), network["dropout"],
                                  network["best_epoch"])
    keys = {"format", "kind", "feature_names", "standardizer", "risk", "cutoffs", "baseline", "nomogram",
            "weights_sha256", "versions", "created", "network"}
    return SurvivalModel(
        card["kind"], predictor,
        BreslowBaseline(np.asarray(card["baseline"]["time"]), np.asarray(card["baseline"]["survival"])),
        RiskCutoffs.from_json(card["cutoffs"]),
        None if card["nomogram"] is None else Nomogram.from_json(card["nomogram"]),
        {key: value for key, value in card.items() if key not in keys})
