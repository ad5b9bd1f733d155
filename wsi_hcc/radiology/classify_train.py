"""Train and evaluate the MVI / grade classifiers on labelled crops; predict with a trained one.

A trained model is a :class:`ClassifierModel`: the torch network and its card, a JSON-ready dict
holding everything that turns a crop into the network's input (channel order, masks, crop size and
spacing, attribute and node-feature standardisation, the nomogram) and the classes. The same
card is written beside the weights (``classify_bundle``), so prediction needs nothing else.

Training is deliberately plain: Adam, a cosine learning-rate schedule, a fixed number of epochs,
random flips of the three axes as augmentation (CNNs), cross-entropy. Options per kind:

- ``fusion``: *modality dropout*: for a case with both modalities, one of them is hidden with
  probability ``modality_dropout`` per step, so each branch also learns to decide alone (what a
  missing modality at inference needs);
- ``ted``: the first ``attribute_epochs`` train stage 1 alone (attribute loss), then the MVI loss
  is added to ``attribute_weight`` times the attribute loss (two-stage, attribute-supervised);
- ``transformer`` (``transformer.VitCropNet``): crop side a multiple of ``patch_vox``, trained at
  ``transformer_lr``;
- ``graph``: node features standardised on the training cases; for binary tasks a logistic
  nomogram on the graph score and the covariates, fitted on the training cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from time import perf_counter

import numpy as np
import torch
from torch import nn

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.classifiers import CNN_KINDS, build_network, check_pools
from wsi_hcc.radiology.cohort import ATTRIBUTES, GRADE_NAMES, CohortCase
from wsi_hcc.radiology.crops import MASK_CHANNELS, Crop, CropSpec, channel_name
from wsi_hcc.radiology.graph_nomogram import GraphNet, LogisticNomogram, fit_nomogram, node_feature_names, node_features
from wsi_hcc.utils.progress import Progress, silent_progress

__all__ = ["TrainConfig", "ClassifierModel", "MODEL_KINDS", "TASK_CLASSES", "COVARIATES", "model_inputs",
           "train_classifier", "untrained_model", "build_model_network", "predict_proba", "evaluate", "graph_score",
           "nomogram_inputs"]

MODEL_KINDS = (*CNN_KINDS, "transformer", "graph")
TASK_CLASSES = {"mvi": ("no_mvi", "mvi"), "grade": GRADE_NAMES}
COVARIATES = ("diameter_mm", "afp_log10")


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how. ``phases`` are CT phase names; ``fusion`` adds the same phases in MR."""

    task: str = "mvi"
    model: str = "multiphase"
    phases: tuple[str, ...] = ("arterial", "portal")
    single_phase: str = "arterial"
    crop: CropSpec = field(default_factory=CropSpec)
    epochs: int = 60
    batch_size: int = 8
    lr: float = 1e-2
    weight_decay: float = 1e-4
    widths: tuple[int, ...] = (8,)
    pools: tuple[str, ...] | None = None
    attribute_weight: float = 1.0
    attribute_epochs: int = 5
    modality_dropout: float = 0.3
    graph_epochs: int = 300
    patch_vox: int = 4
    transformer_lr: float = 3e-3
    seed: int = 0

    def __post_init__(self):
        if self.task not in TASK_CLASSES:
            raise WsiHccError(f"task {self.task!r} is not one of {sorted(TASK_CLASSES)}")
        if self.model not in MODEL_KINDS:
            raise WsiHccError(f"model {self.model!r} is not one of {list(MODEL_KINDS)}")
        if self.model == "single" and self.single_phase not in self.phases:
            raise WsiHccError(f"single-phase model on {self.single_phase!r}, which is not among the phases "
                              f"{list(self.phases)}")
        if self.model == "mcf" and len(self.phases) < 2:
            raise WsiHccError("the mcf model fuses phases: give two or more phases")
        if self.model == "transformer":
            from wsi_hcc.radiology.transformer import check_transformer_crop

            check_transformer_crop(self.crop.size_vox, self.patch_vox)

    @property
    def masks(self) -> tuple[str, ...]:
        return MASK_CHANNELS

    @property
    def region_pools(self) -> tuple[str, ...]:
        """The encoders' region pooling (``classifiers.POOLS``); by default the ring for MVI, the tumour for grade."""
        if self.pools is not None:
            return check_pools(self.pools)
        if self.model == "ted":
            # Stage 1 reads tumour size and heterogeneity, which live in the tumour.
            return ("tumour_mean", "tumour_max", "ring_mean", "ring_max")
        return ("ring_mean", "ring_max") if self.task == "mvi" else ("tumour_mean", "tumour_max", "ring_mean")

    def to_json(self) -> dict:
        data = asdict(self)
        data["crop"] = self.crop.to_json()
        return data

    @property
    def classes(self) -> tuple[str, ...]:
        return TASK_CLASSES[self.task]

    def channels(self) -> list[str]:
        """Image channel names in input order."""
        if self.model == "single":
            return [channel_name("CT", self.single_phase)]
        ct = [channel_name("CT", p) for p in self.phases]
        return ct + [channel_name("MR", p) for p in self.phases] if self.model == "fusion" else ct


@dataclass(eq=False)
class ClassifierModel:
    """A network and its card (see the module docstring)."""

    network: nn.Module
    card: dict

    @property
    def kind(self) -> str:
        return self.card["kind"]

    @property
    def classes(self) -> list[str]:
        return list(self.card["classes"])


def _network_args(config: TrainConfig, channels: list[str]) -> dict:
    n_classes = len(config.classes)
    widths = list(config.widths)
    in_channels = len(channels) + len(config.masks)
    mask_index = list(range(len(channels), in_channels))
    common = {"n_classes": n_classes, "pools": list(config.region_pools)}
    if config.model in ("single", "multiphase"):
        return {"in_channels": in_channels, "mask_channels": mask_index, "widths": widths, **common}
    if config.model == "transformer":
        return {"in_channels": in_channels, "mask_channels": mask_index, "crop_vox": config.crop.size_vox,
                "patch_vox": config.patch_vox, "stem_width": widths[0], **common}
    if config.model == "fusion":
        branches = {m: [i for i, c in enumerate(channels) if c.startswith(f"{m}:")] + mask_index for m in ("CT", "MR")}
        return {"branch_channels": branches, "widths": widths, **common}
    if config.model == "ted":
        return {"in_channels": in_channels, "mask_channels": mask_index, "n_attributes": len(ATTRIBUTES),
                "widths": widths, **common}
    if config.model == "mcf":
        return {"phase_channels": list(range(len(channels))), "mask_channels": mask_index,
                "stream_widths": [max(2, widths[0] // 2)] * 2, "fused_widths": [widths[0], widths[-1]], **common}
    return {"in_features": len(node_feature_names(channels)), "n_classes": n_classes, "hidden": 16}


def build_model_network(kind: str, args: dict) -> nn.Module:
    """The network of any kind (CNNs and the graph network) from the card's arguments."""
    if kind == "graph":
        return GraphNet(args["in_features"], args["n_classes"], args["hidden"])
    if kind == "transformer":
        from wsi_hcc.radiology.transformer import VitCropNet

        return VitCropNet(args["in_channels"], args["mask_channels"], args["crop_vox"], args["n_classes"],
                          args["patch_vox"], args["stem_width"], pools=tuple(args["pools"]))
    return build_network(kind, args)


def model_inputs(card: dict, crops: Sequence[Crop]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The network input for ``crops``: ``(x, available)``; ``available`` ``(B, M)`` only for fusion."""
    channels = list(card["channels"])
    if card["kind"] == "graph":
        raw = np.stack([node_features(crop, channels) for crop in crops])
        mean = np.asarray(card["node_features"]["mean"], np.float32)[:, None]
        sd = np.asarray(card["node_features"]["sd"], np.float32)[:, None]
        x = np.nan_to_num((raw - mean) / sd, nan=0.0, posinf=0.0, neginf=0.0)
        return torch.as_tensor(x, dtype=torch.float32), None
    expected = tuple(card["crop"]["size_vox"] for _ in range(3))
    for crop in crops:
        if crop.shape != expected:
            raise WsiHccError(f"a crop of {crop.shape} voxels does not fit a model trained on {expected}; crop with "
                              f"the model card's crop settings")
    x = torch.as_tensor(np.stack([crop.stack(channels, card["masks"]) for crop in crops]))
    if card["kind"] != "fusion":
        missing = sorted({c for crop in crops for c in channels if c not in crop.channels})
        if missing:
            raise WsiHccError(f"the {card['kind']} model needs channels {channels}; missing {missing}")
        return x, None
    modalities = list(card["args"]["branch_channels"])
    available = torch.as_tensor([[crop.has_modality(m) for m in modalities] for crop in crops])
    if bool((~available.any(dim=1)).any()):
        raise WsiHccError(f"the fusion model needs at least one of {modalities} per case; the inputs give neither")
    return x, available


def _forward(network: nn.Module, kind: str, x: torch.Tensor, available: torch.Tensor | None) -> torch.Tensor:
    return network(x, available) if kind == "fusion" else network(x)


def _flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    for axis in (2, 3, 4):
        if torch.rand(1, generator=generator).item() < 0.5:
            x = x.flip(axis)
    return x


def _drop_modality(available: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    both = available.all(dim=1)
    drop = both & (torch.rand(len(available), generator=generator) < p)
    which = torch.randint(0, available.shape[1], (len(available),), generator=generator)
    out = available.clone()
    out[drop, which[drop]] = False
    return out


def _attribute_targets(cases: Sequence[CohortCase]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    values = np.asarray([[case.attributes[a] for a in ATTRIBUTES] for case in cases], np.float32)
    mean, sd = values.mean(axis=0), values.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return (values - mean) / sd, mean, sd


def _card(config: TrainConfig, channels: list[str], args: dict) -> dict:
    return {"kind": config.model, "task": config.task, "classes": list(config.classes), "channels": channels,
            "masks": list(config.masks), "crop": config.crop.to_json(), "args": args, "config": config.to_json()}


def untrained_model(config: TrainConfig) -> ClassifierModel:
    """A randomly initialised model (seeded) with a complete card: for smoke tests and pipelines without weights.

    Standardisations are the identity; there is no nomogram.
    """
    torch.manual_seed(config.seed)
    channels = config.channels()
    args = _network_args(config, channels)
    card = _card(config, channels, args) | {"training": None}
    if config.model == "graph":
        n = args["in_features"]
        card["node_features"] = {"names": node_feature_names(channels), "mean": [0.0] * n, "sd": [1.0] * n}
    if config.model == "ted":
        card["attributes"] = {"names": list(ATTRIBUTES), "mean": [0.0] * len(ATTRIBUTES), "sd": [1.0] * len(ATTRIBUTES)}
    network = build_model_network(config.model, args)
    network.eval()
    return ClassifierModel(network, card)


def train_classifier(cases: Sequence[CohortCase], config: TrainConfig,
                     progress: Progress | None = None) -> ClassifierModel:
    """Train ``config.model`` for ``config.task`` on ``cases``; returns the model with its card."""
    if len(cases) < 4:
        raise WsiHccError(f"{len(cases)} training cases are too few; give at least 4")
    labels = np.asarray([case.label(config.task) for case in cases])
    if len(np.unique(labels)) < 2:
        raise WsiHccError(f"all training cases have the same {config.task} label; add cases of the other class(es)")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    channels = config.channels()
    args = _network_args(config, channels)
    card = _card(config, channels, args)
    crops = [case.crop for case in cases]
    if config.model == "graph":
        raw = np.stack([node_features(crop, channels) for crop in crops])
        mean = np.nanmean(raw, axis=(0, 2))
        sd = np.nanstd(raw, axis=(0, 2))
        card["node_features"] = {"names": node_feature_names(channels), "mean": mean.tolist(),
                                 "sd": np.where(sd > 0, sd, 1.0).tolist()}
    attributes = None
    if config.model == "ted":
        attributes, mean, sd = _attribute_targets(cases)
        card["attributes"] = {"names": list(ATTRIBUTES), "mean": mean.tolist(), "sd": sd.tolist()}
    x, available = model_inputs(card, crops)
    y = torch.as_tensor(labels, dtype=torch.long)
    network = build_model_network(config.model, args)
    epochs = config.graph_epochs if config.model == "graph" else config.epochs
    batch = len(cases) if config.model == "graph" else config.batch_size
    # The transformer kind trains with its own rate: at the CNNs' 1e-2 it did not fit the phantoms.
    lr = config.transformer_lr if config.model == "transformer" else config.lr
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(epochs, 1))
    loss_fn = nn.CrossEntropyLoss()
    started = perf_counter()
    history = []
    progress = progress or silent_progress()
    progress.steps_planned(epochs, name="epochs")
    for epoch in range(epochs):
        network.train()
        order = torch.randperm(len(cases), generator=generator)
        if len(order) % batch == 1:
            order = order[:-1]  # a batch of one breaks batch norm
        total = 0.0
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            xb = x[rows] if config.model == "graph" else _flip(x[rows], generator)
            optimiser.zero_grad()
            if config.model == "ted":
                logits, predicted = network.forward_with_attributes(xb)
                attribute_loss = nn.functional.mse_loss(predicted, torch.as_tensor(attributes[rows.numpy()]))
                loss = attribute_loss if epoch < config.attribute_epochs else \
                    loss_fn(logits, y[rows]) + config.attribute_weight * attribute_loss
            else:
                av = None if available is None else _drop_modality(available[rows], config.modality_dropout, generator)
                loss = loss_fn(_forward(network, config.model, xb, av), y[rows])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(rows)
        schedule.step()
        history.append(total / len(order))
        progress.steps_done(1, f"loss {history[-1]:.4f}")
        if (epoch + 1) % max(1, epochs // 10) == 0:
            progress.message(f"epoch {epoch + 1}/{epochs} loss {history[-1]:.4f}")
    network.eval()
    card["training"] = {"cases": len(cases),
                        "class_counts": np.bincount(labels, minlength=len(config.classes)).tolist(),
                        "epochs": epochs, "seconds": round(perf_counter() - started, 2),
                        "final_loss": round(history[-1], 5), "loss_history": [round(v, 5) for v in history]}
    model = ClassifierModel(network, card)
    if config.model == "graph" and config.task == "mvi":
        values = nomogram_inputs(model, cases)
        card["nomogram"] = fit_nomogram(values, labels, ["graph_score", *COVARIATES]).to_json()
    return model


@torch.no_grad()
def predict_proba(model: ClassifierModel, crops: Sequence[Crop], batch_size: int = 16) -> np.ndarray:
    """``(n, n_classes)`` class probabilities."""
    model.network.eval()
    out = []
    for start in range(0, len(crops), batch_size):
        x, available = model_inputs(model.card, crops[start:start + batch_size])
        out.append(torch.softmax(_forward(model.network, model.kind, x, available), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.classes)))


def graph_score(probabilities: np.ndarray) -> np.ndarray:
    """The log-odds of the positive class, clipped to +-10 (the nomogram's graph covariate)."""
    p = np.clip(probabilities[:, 1], 1e-6, 1 - 1e-6)
    return np.clip(np.log(p / (1 - p)), -10, 10)


def nomogram_inputs(model: ClassifierModel, cases: Sequence, covariates: Sequence[dict] | None = None) -> np.ndarray:
    """``(n, 1 + covariates)``: graph score and covariates, per case (``covariates`` overrides the cases')."""
    crops = [case.crop if isinstance(case, CohortCase) else case for case in cases]
    given = covariates if covariates is not None else [case.covariates for case in cases]
    missing = sorted({name for values in given for name in COVARIATES if name not in values})
    if missing:
        raise WsiHccError(f"the nomogram needs covariates {list(COVARIATES)}; missing {missing} "
                          f"(e.g. --covariate afp_log10=1.8)")
    score = graph_score(predict_proba(model, crops))
    return np.column_stack([score, [[values[name] for name in COVARIATES] for values in given]])


def evaluate(model: ClassifierModel, cases: Sequence[CohortCase]) -> dict:
    """Held-out metrics: ROC AUC (one-vs-rest macro for grade), accuracy, balanced accuracy, confusion,
    and for grade the quadratic weighted kappa; nomogram AUC when the model has one."""
    from sklearn.metrics import (
        accuracy_score,
        balanced_accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        roc_auc_score,
    )

    labels = np.asarray([case.label(model.card["task"]) for case in cases])
    probabilities = predict_proba(model, [case.crop for case in cases])
    predicted = probabilities.argmax(axis=1)
    n_classes = len(model.classes)
    present = np.unique(labels)
    auc = None
    if n_classes == 2 and len(present) == 2:
        auc = float(roc_auc_score(labels, probabilities[:, 1]))
    elif n_classes > 2 and len(present) == n_classes:
        auc = float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    metrics = {"cases": len(cases), "roc_auc": auc, "accuracy": float(accuracy_score(labels, predicted)),
               "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
               "confusion": confusion_matrix(labels, predicted, labels=list(range(n_classes))).tolist()}
    if n_classes > 2:
        metrics["quadratic_kappa"] = float(cohen_kappa_score(labels, predicted, weights="quadratic"))
    if "nomogram" in model.card and len(present) == 2:
        nomogram = LogisticNomogram.from_json(model.card["nomogram"])
        metrics["nomogram_roc_auc"] = float(roc_auc_score(labels, nomogram.probability(nomogram_inputs(model, cases))))
    return {"metrics": metrics, "probabilities": probabilities, "labels": labels}
