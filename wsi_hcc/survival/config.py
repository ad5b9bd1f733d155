"""The survival configuration: YAML with top key ``survival``, validated on load, overridden by flags.

The data (table, time and event columns, features, embeddings) come from the command line; the
config holds how the model is fitted, grouped and evaluated.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsi_hcc.utils.config import read_config_section, validate_section, with_dotted_overrides

__all__ = ["SurvivalConfig", "DeepSurvConfig", "CoxConfig", "GroupConfig", "NomogramConfig",
           "load_survival_config", "validate_survival_config"]

EXAMPLE = "configs/survival/deepsurv_tace.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeepSurvConfig(_Strict):
    """A DeepSurv-style Cox network (Katzman et al. 2018): an MLP from standardised inputs to a log hazard.

    ``hidden``: widths of the hidden layers ([] is a linear Cox model trained by gradient descent).
    ``ties``: Efron or Breslow handling of tied event times in the partial likelihood. Training is
    full-batch Adam (the Cox loss needs whole risk sets) with early stopping on the partial likelihood
    of a validation split carved from the training rows only; the best epoch's weights are kept.
    ``cpu_threads``: torch threads while training (None: torch's default); small full-batch
    networks run fastest on one.
    """

    hidden: list[int] = Field(default_factory=lambda: [16], max_length=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    ties: Literal["efron", "breslow"] = "efron"
    lr: float = Field(1e-2, gt=0, le=10)
    weight_decay: float = Field(1e-3, ge=0)
    epochs: int = Field(300, ge=1, le=100000)
    patience: int = Field(30, ge=1)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    cpu_threads: int | None = Field(1, ge=1, le=512)

    @model_validator(mode="after")
    def _widths(self):
        if any(width < 1 for width in self.hidden):
            raise ValueError("hidden widths must be positive integers")
        return self


class CoxConfig(_Strict):
    """A classical Cox model (lifelines ``CoxPHFitter``, Efron ties) on standardised inputs.

    ``penalizer`` and ``l1_ratio`` are lifelines' elastic-net penalty (0: plain partial likelihood).
    """

    penalizer: float = Field(0.0, ge=0)
    l1_ratio: float = Field(0.0, ge=0, le=1)


class GroupConfig(_Strict):
    """Risk groups from cut-offs fitted on training risks only and applied unchanged to new data.

    ``method``: ``median`` (2 groups), ``tertiles`` (3), ``optimal`` (X-tile style: the cut-off with the
    largest log-rank statistic, each group at least ``min_fraction`` of the patients) or ``fixed``
    (``threshold`` on the risk score, e.g. Wang 2022's 0.5). ``labels``: names, low risk first.
    """

    method: Literal["median", "tertiles", "optimal", "fixed"] = "median"
    threshold: float | None = None
    min_fraction: float = Field(0.1, gt=0, lt=0.5)
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _threshold(self):
        if self.method == "fixed" and self.threshold is None:
            raise ValueError("method 'fixed' needs a threshold (e.g. threshold: 0.5)")
        if self.labels is not None:
            wanted = 3 if self.method == "tertiles" else 2
            if len(self.labels) != wanted or len(set(self.labels)) != wanted:
                raise ValueError(f"labels must be {wanted} distinct names for method '{self.method}'")
        return self

    def group_labels(self) -> list[str]:
        if self.labels is not None:
            return list(self.labels)
        return ["low", "intermediate", "high"] if self.method == "tertiles" else ["low", "high"]


class NomogramConfig(_Strict):
    """A Cox nomogram of the deep risk score with clinical ``covariates`` (lifelines), drawn as a
    points table; ``survival_time``: the time (table units) whose survival probability it reads out."""

    covariates: list[str] = Field(default_factory=list)
    survival_time: float | None = Field(None, gt=0)


class SurvivalConfig(_Strict):
    """Everything that decides what ``wsi-hcc survival train`` fits and how it is evaluated.

    Attributes
    ----------
    model : "deepsurv" or "cox"
    deepsurv, cox : settings of each model.
    folds : int
        Cross-validation folds stratified by event (1: no cross-validation, only the final model).
    groups : GroupConfig
    auc_times : list of float, optional
        Times (table units) of the time-dependent AUC; None: quartiles of the event times.
    bootstrap : int
        Bootstrap resamples for the C-index 95% CIs (0: none).
    nomogram : NomogramConfig, optional
    seed : int
    """

    model: Literal["deepsurv", "cox"] = "deepsurv"
    deepsurv: DeepSurvConfig = DeepSurvConfig()
    cox: CoxConfig = CoxConfig()
    folds: int = Field(5, ge=1, le=50)
    groups: GroupConfig = GroupConfig()
    auc_times: list[float] | None = None
    bootstrap: int = Field(200, ge=0)
    nomogram: NomogramConfig | None = None
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _times(self):
        if self.auc_times is not None and (not self.auc_times or any(t <= 0 for t in self.auc_times)):
            raise ValueError("auc_times must be positive times")
        return self

    def with_overrides(self, **overrides: Any) -> SurvivalConfig:
        """A copy with the given non-None settings replaced (dotted names reach nested ones)."""
        return validate_survival_config(with_dotted_overrides(self.model_dump(), overrides), "command-line options")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def validate_survival_config(data: Any, where: str) -> SurvivalConfig:
    return validate_section(SurvivalConfig, data, where, "survival", "survival", "configs/survival")


def load_survival_config(path: str | Path | None) -> SurvivalConfig:
    """Load and validate a survival config (top-level key ``survival``); None gives the defaults."""
    if path is None:
        return SurvivalConfig()
    return validate_survival_config(read_config_section(path, "survival", "survival", EXAMPLE), str(path))
