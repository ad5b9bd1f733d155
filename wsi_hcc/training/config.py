"""The training configuration: YAML with top key ``train``, validated on load, overridden by flags.

Paths to data in a config (stores, label CSV, annotation folder, initial weights) are relative to
the folder ``wsi-hcc`` runs in, like paths given as flags. The augmentation YAML is a config itself:
relative to the config file that names it (or a shipped name such as ``augment/chen2022``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsi_hcc.errors import ConfigError
from wsi_hcc.utils.config import (
    config_reference,
    locate_config,
    read_config_section,
    validate_section,
    with_dotted_overrides,
)

__all__ = ["TrainConfig", "LabelConfig", "SplitConfig", "OptimizerConfig", "ScheduleConfig",
           "ClassWeightingConfig", "EarlyStoppingConfig", "load_train_config", "validate_train_config",
           "MONITOR_MODES"]

EXAMPLE = "configs/train/resnet34_hcc.yaml"

# metric -> "min" (lower is better) or "max"
MONITOR_MODES = {"val_loss": "min", "val_auc": "max", "val_balanced_accuracy": "max", "val_accuracy": "max"}


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LabelConfig(_Strict):
    """Where tile labels come from: a slide-label CSV, or QuPath GeoJSON annotations per slide.

    Attributes
    ----------
    slide_csv : str, optional
        CSV with columns ``slide`` (store stem), ``patient``, ``label`` and optionally ``grade`` and
        ``split`` (train/validation/test, to fix the split instead of drawing it). With
        ``annotations`` it supplies patients (and splits) only; its labels are not used.
    column : str
        ``label`` or ``grade``: which CSV column holds each slide's class.
    annotations : str, optional
        Folder of QuPath exports named ``<slide stem>.geojson`` (or ``.geojson.gz``/``.json``); each
        tile takes the class covering most of it. Slides without a file are left out.
    class_map : dict
        QuPath class name or CSV label -> one of ``class_names`` (``{Tumor: HCC, Normal: non-HCC}``;
        ``{tumour: HCC, non_tumour: non-HCC}`` for the labels ``wsi-hcc demo`` writes); QuPath classes
        that are neither mapped nor in ``class_names`` are ignored.
    min_coverage : float
        Fraction of a tile its class must cover for the tile to be labelled.
    """

    slide_csv: str | None = None
    column: Literal["label", "grade"] = "label"
    annotations: str | None = None
    class_map: dict[str, str] = Field(default_factory=dict)
    min_coverage: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _one_source(self):
        if not self.slide_csv and not self.annotations:
            raise ValueError("give labels.slide_csv (one label per slide) or labels.annotations (QuPath GeoJSON)")
        return self


class SplitConfig(_Strict):
    """Patient-level split fractions (train, validation, test) and the seed that deals patients."""

    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0

    @model_validator(mode="after")
    def _sum_to_one(self):
        if min(self.fractions) < 0 or abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ValueError(f"fractions {list(self.fractions)} must be non-negative and sum to 1")
        if self.fractions[0] <= 0 or self.fractions[1] <= 0:
            raise ValueError("train and validation fractions must be above 0")
        return self


class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only


class ScheduleConfig(_Strict):
    """Learning rate: constant for ``constant_epochs`` epochs, then multiplied by ``gamma`` each epoch.

    Epoch ``e`` (0-based) trains at ``lr * gamma ** max(0, e - constant_epochs + 1)``: Keras'
    ``LearningRateScheduler`` recipe ``lr if epoch < 10 else lr * exp(-0.1)`` is
    ``constant_epochs: 10, gamma: 0.9048374180359595``.
    """

    constant_epochs: int = Field(10**9, ge=0)
    gamma: float = Field(1.0, gt=0, le=1)


class ClassWeightingConfig(_Strict):
    """``loss: balanced`` weights the loss by inverse class frequency (train split);
    ``sampler: true`` draws training tiles with a class-balanced ``WeightedRandomSampler``."""

    loss: Literal["none", "balanced"] = "none"
    sampler: bool = False


class EarlyStoppingConfig(_Strict):
    """Stop after ``patience`` epochs without an improvement of ``metric`` by more than ``min_delta``;
    the best epoch by ``metric`` is kept as ``best.safetensors``. ``patience: null`` never stops early."""

    metric: Literal["val_loss", "val_auc", "val_balanced_accuracy", "val_accuracy"] = "val_loss"
    patience: int | None = Field(None, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(_Strict):
    """Everything that decides what ``wsi-hcc train-patches`` trains.

    Attributes
    ----------
    backbone : str
        A registered backbone (``resnet34``, ``livernet``) or any timm model name.
    weights : str, optional
        Initial weights (safetensors, PyTorch state dict, LiverNet Keras .h5); random without.
    class_names : list of str, optional
        Classes in output order; for two classes put the positive (e.g. HCC) second, it is the one
        ROC AUC scores. Default: the sorted labels found.
    input_px : int, optional
        Model input edge; default the backbone card's. Tiles are resized to it.
    stores : list of str
        Patch stores or folders of ``*.zarr`` stores (all at one mpp and tile size).
    labels, split, optimizer, schedule, class_weighting, early_stopping
        See their classes.
    augmentation : str or list, optional
        Albumentations pipeline for training tiles: a YAML file (relative to the training config, or
        a shipped name such as ``augment/chen2022``) or the list of steps itself
        (``[{HorizontalFlip: {p: 0.5}}, ...]``).
    flip_copies : bool
        Every training tile also enters each epoch flipped vertically and flipped horizontally
        (three copies), as LiverNet's release built its training set.
    batch_size, epochs, seed, num_workers
        ``seed`` fixes initialisation, tile order and augmentation; ``num_workers`` DataLoader
        processes (results do not depend on it; None: chosen from the CPU count and the device).
    device, amp
        ``auto`` picks CUDA when present; ``amp`` uses float16 autocast with a GradScaler on CUDA
        only (CPU runs in float32).
    max_tiles_per_slide : int, optional
        Use at most this many (seeded random) tiles of each slide, for quick runs.
    checkpoint_minutes : float
        Also checkpoint inside an epoch at most this often (0: after every batch).
    """

    backbone: str
    weights: str | None = None
    class_names: list[str] | None = None
    input_px: int | None = Field(None, ge=16, le=4096)
    stores: list[str] = Field(min_length=1)
    labels: LabelConfig
    split: SplitConfig = SplitConfig()
    augmentation: str | list[dict[str, dict[str, Any] | None]] | None = None
    flip_copies: bool = False
    batch_size: int = Field(32, ge=1, le=4096)
    epochs: int = Field(20, ge=1, le=10000)
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    class_weighting: ClassWeightingConfig = ClassWeightingConfig()
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    seed: int = Field(0, ge=0)
    num_workers: int | None = Field(None, ge=0, le=64)
    device: str = "auto"
    amp: bool = True
    max_tiles_per_slide: int | None = Field(None, ge=1)
    checkpoint_minutes: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _inline_augmentation(self):
        if isinstance(self.augmentation, list):
            from wsi_hcc.stain.augment import build_augmentation

            try:
                build_augmentation(self.augmentation)
            except ConfigError as exc:
                raise ValueError(str(exc).removeprefix("augmentation: ")) from None
        return self

    @model_validator(mode="after")
    def _classes(self):
        if self.class_names is not None:
            if len(self.class_names) < 2:
                raise ValueError("class_names needs at least two classes")
            if len(set(self.class_names)) != len(self.class_names):
                raise ValueError("class_names has a duplicate")
            unknown = sorted(set(self.labels.class_map.values()) - set(self.class_names))
            if unknown:
                raise ValueError(f"labels.class_map maps to {unknown}, which are not in class_names")
        return self

    def with_overrides(self, **overrides: Any) -> TrainConfig:
        """A copy with the given non-None fields replaced (dotted names reach nested settings)."""
        return validate_train_config(with_dotted_overrides(self.model_dump(), overrides), "command-line options")

    def resume_digest(self) -> str:
        """What a checkpoint must match to be resumed: everything except how long and where it runs."""
        data = self.model_dump(mode="json")
        for key in ("epochs", "num_workers", "device", "checkpoint_minutes"):
            data.pop(key)
        for key in ("patience", "min_delta"):
            data["early_stopping"].pop(key)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def validate_train_config(data: Any, where: str) -> TrainConfig:
    return validate_section(TrainConfig, data, where, "train", "training", "configs/train")


def load_train_config(path: str | Path) -> TrainConfig:
    """Load and validate a training config (top-level key ``train``) from YAML: a path or a shipped name
    (``train/resnet34_hcc``). An augmentation file it names becomes an absolute path, found next to it."""
    path = locate_config(path, "training", "train")
    config = validate_train_config(read_config_section(path, "train", "training", EXAMPLE), str(path))
    if isinstance(config.augmentation, str):
        augmentation = config_reference(config.augmentation, path, "augmentation", "augment")
        config = config.model_copy(update={"augmentation": str(augmentation)})
    return config
