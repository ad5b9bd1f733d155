"""The MIL training configuration: YAML with top key ``mil``, validated on load, overridden by flags.

Relative paths (stores, label CSV) are relative to the folder ``wsi-hcc`` runs in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsi_hcc.utils.config import read_config_section, validate_section, with_dotted_overrides

__all__ = ["MilConfig", "MilModelConfig", "load_mil_config", "validate_mil_config"]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MilModelConfig(_Strict):
    """``name``: gated, clam_sb, clam_mb, mean or max. ``hidden``: embedding width (default 256;
    512 for CLAM as in the paper). ``k_sample`` and ``bag_weight``: CLAM's instance pseudo-labels per
    side and the bag loss' share (the instance loss gets ``1 - bag_weight``)."""

    name: Literal["gated", "clam_sb", "clam_mb", "mean", "max"] = "gated"
    hidden: int | None = Field(None, ge=4, le=8192)
    dropout: float = Field(0.25, ge=0, lt=1)
    k_sample: int = Field(8, ge=1)
    bag_weight: float = Field(0.7, ge=0, le=1)


class MilConfig(_Strict):
    """Everything that decides what ``wsi-hcc train-mil`` trains and how it is evaluated.

    Attributes
    ----------
    stores : list of str
        Patch stores with ``features`` or folders of ``*.zarr`` stores (all from one feature model).
    labels_csv : str
        CSV with ``slide`` (store stem), ``patient``, ``label`` and optionally ``grade``.
    class_names : list of str
        The two ``label`` classes, negative first: ROC AUC, sensitivity and the threshold are for the second.
    class_map : dict
        A label of the CSV -> one of ``class_names``, for a CSV in another vocabulary
        (``{non_tumour: non-HCC, tumour: HCC}``: the labels ``wsi-hcc demo`` writes). Labels already in
        ``class_names`` need no entry.
    grade_names : list of str, optional
        Grades in ascending order (``[G1, G2, G3]``): adds a grade head, trained on the slides that
        have a grade, evaluated with quadratic-weighted kappa. None: no grade head.
    grade_loss_weight : float
        Weight of the grade head's loss against the label head's.
    folds : int
        Patient-level cross-validation folds (stratified by label; a patient's slides stay together).
    validation_fraction : float
        Share of each fold's training patients held out for early stopping, temperature and threshold.
    epochs, patience, min_delta
        Early stopping on validation loss; the best epoch's weights are kept.
    lr, weight_decay
        AdamW.
    max_tiles : int, optional
        Random tiles per training bag per epoch (evaluation always uses every tile).
    class_balanced : bool
        Draw training bags with a class-balanced sampler.
    temperature_scaling : bool
        Fit a temperature on each fold's validation slides (never test slides) and apply it.
    threshold : "youden" or float
        Decision threshold on P(positive): Youden's J on the fold's validation slides, or a fixed value.
    bootstrap : int
        Bootstrap resamples for the AUC 95% CI (0: none). ``calibration_bins``: for ECE.
    bundle : "best_fold" or "ensemble"
        The model bundle: the fold with the lowest validation loss, or every fold's weights (mean of
        probabilities).
    backbone_weights : str, optional
        The feature backbone's weights file (what ``wsi-hcc features --weights`` was given), copied
        into the bundle. None: found by its sha256 beside the stores (where ``wsi-hcc features``
        keeps randomly initialised weights and its manifest).
    seed, device
    cpu_threads : int, optional
        torch CPU threads while training (None: torch's default). Bags of a few hundred small
        feature vectors run fastest on 1 thread; large bags of wide features gain from more.
    """

    stores: list[str] = Field(min_length=1)
    labels_csv: str
    class_names: list[str] = Field(min_length=2, max_length=2)
    class_map: dict[str, str] = Field(default_factory=dict)
    grade_names: list[str] | None = None
    grade_loss_weight: float = Field(1.0, ge=0)
    model: MilModelConfig = MilModelConfig()
    folds: int = Field(5, ge=2, le=50)
    validation_fraction: float = Field(0.2, gt=0, lt=1)
    epochs: int = Field(50, ge=1, le=10000)
    patience: int | None = Field(10, ge=1)
    min_delta: float = Field(0.0, ge=0)
    lr: float = Field(2e-4, gt=0, le=10)
    weight_decay: float = Field(1e-5, ge=0)
    max_tiles: int | None = Field(None, ge=1)
    class_balanced: bool = True
    temperature_scaling: bool = True
    threshold: Literal["youden"] | float = "youden"
    bootstrap: int = Field(1000, ge=0)
    calibration_bins: int = Field(10, ge=2, le=100)
    bundle: Literal["best_fold", "ensemble"] = "best_fold"
    backbone_weights: str | None = None
    seed: int = Field(0, ge=0)
    device: str = "cpu"
    cpu_threads: int | None = Field(None, ge=1, le=512)

    @model_validator(mode="after")
    def _names(self):
        for field in ("class_names", "grade_names"):
            names = getattr(self, field)
            if names is not None and len(set(names)) != len(names):
                raise ValueError(f"{field} has a duplicate")
        unknown = sorted(set(self.class_map.values()) - set(self.class_names))
        if unknown:
            raise ValueError(f"class_map maps to {unknown}, which are not in class_names {self.class_names}")
        if self.grade_names is not None and len(self.grade_names) < 2:
            raise ValueError("grade_names needs at least two grades")
        if isinstance(self.threshold, float) and not 0 < self.threshold < 1:
            raise ValueError("threshold must be 'youden' or a probability between 0 and 1")
        return self

    def with_overrides(self, **overrides: Any) -> MilConfig:
        return validate_mil_config(with_dotted_overrides(self.model_dump(), overrides), "command-line options")

    def fold_digest(self) -> str:
        """What a finished fold must match to be reused: everything but the device and reporting."""
        data = self.model_dump(mode="json")
        for key in ("device", "bootstrap", "bundle", "cpu_threads", "backbone_weights"):
            data.pop(key)
        if not data["class_map"]:
            data.pop("class_map")  # folds trained before class_map existed are still reused
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def validate_mil_config(data: Any, where: str) -> MilConfig:
    return validate_section(MilConfig, data, where, "mil", "MIL", "configs/mil")


def load_mil_config(path: str | Path) -> MilConfig:
    """Load and validate a MIL config (top-level key ``mil``) from YAML."""
    return validate_mil_config(read_config_section(path, "mil", "MIL", "configs/mil/gated_hcc.yaml"), str(path))
