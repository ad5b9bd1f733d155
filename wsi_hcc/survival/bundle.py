"""A trained survival model as a folder: ``weights.safetensors`` and ``card.json``. Loading never unpickles.

The card holds everything prediction needs besides the weights: feature names and order, the
standardisation fitted on the training rows, the risk-group cut-offs, the Breslow baseline survival,
the nomogram (if any), the config, the data description and the versions of the stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsi_hcc.survival.cox import BreslowBaseline, CoxModel
from wsi_hcc.survival.data import Standardizer
from wsi_hcc.survival.groups import RiskCutoffs
from wsi_hcc.survival.nomogram import Nomogram
from wsi_hcc.utils.checked_weights import load_checked, save_checked

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
        **model.info,
    }
    if model.kind == "deepsurv":
        card["network"] = {"hidden": list(predictor.hidden), "dropout": predictor.dropout,
                           "best_epoch": predictor.best_epoch}
    return save_checked(folder, _tensors(model), card)


def load_model(folder: str | Path) -> SurvivalModel:
    """Read a model folder written by :func:`save_model` (JSON and safetensors only)."""
    from wsi_hcc.survival.deepsurv import DeepSurvModel, DeepSurvNet

    folder = Path(folder)
    card, tensors = load_checked(folder, card_format=CARD_FORMAT,
                                 kind="a survival model folder", writer="wsi-hcc survival train")
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
