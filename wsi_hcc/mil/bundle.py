"""The MIL model bundle: a model folder (``utils.checked_weights``) holding every member of the
model, the feature backbone and the training config.

Layout::

    model/
      card.json            classes, grades, threshold, temperature, model arguments, the members,
                           the feature provenance of the training stores (digest, backbone and its
                           card), the tiling the stores were made with, versions and the sha256 of
                           every file
      weights.safetensors  every member's tensors, named ``fold<k>.<parameter>``
      backbone.safetensors the feature backbone's weights (with its model card inside)
      config.yaml          the training config

Everything ``wsi-hcc classify`` needs to go from a slide to a prediction is in the folder. Loading
reads JSON and safetensors only: nothing is ever unpickled, and every file's sha256 is checked.
Bundles of the older layout (``wsi-hcc-mil-bundle/2``: one ``fold<k>.safetensors`` per member)
still load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from wsi_hcc.errors import WsiHccError
from wsi_hcc.utils.checked_weights import CARD_NAME, check_file, file_sha256, load_checked, save_checked
from wsi_hcc.utils.config import first_error

__all__ = ["BUNDLE_FORMAT", "BACKBONE_FILE", "MilCard", "MilBundle", "SlidePrediction", "load_mil_bundle",
           "save_mil_bundle", "save_member", "bundle_backbone"]

BUNDLE_FORMAT = "wsi-hcc-mil-bundle/3"
_LEGACY_FORMATS = ("wsi-hcc-mil-bundle/2", "wsi-hcc-mil-bundle/1")
BACKBONE_FILE = "backbone.safetensors"
_WRITER = "wsi-hcc train-mil (or, for a patch classifier, wsi-hcc bundle or train-patches)"


def save_member(model, path: Path) -> str:
    """Write ``model``'s tensors as safetensors at ``path`` (a fold's checkpoint); returns the sha256."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": BUNDLE_FORMAT})
    return file_sha256(path)


def bundle_backbone(weights: Path, backbone: str, card: dict[str, Any], tiling: dict[str, Any],
                    feature_dtype: str) -> tuple[Path | bytes, dict[str, Any]]:
    """The feature backbone's weights as a bundle file, and their description for the card.

    ``card`` is the backbone's model card as the features recorded it. Our own safetensors are
    kept byte for byte, so features already extracted with them are recognised (same digest) and
    reused by ``classify``; other formats are converted once.
    """
    import hashlib

    from wsi_hcc.mil.handcrafted import entry_for_card
    from wsi_hcc.models import create_backbone, state_sha256, weights_bytes

    model = create_backbone(backbone, num_classes=0, weights=weights, entry=entry_for_card(card))
    if weights.suffix == ".safetensors":
        content, sha256 = weights, file_sha256(weights)
    else:
        content = weights_bytes(model, model.card)
        sha256 = hashlib.sha256(content).hexdigest()
    return content, {"name": backbone, "file": BACKBONE_FILE, "sha256": sha256, "model_sha256": state_sha256(model),
                     "source": str(weights), "feature_dtype": feature_dtype, "tiling": tiling}


def save_mil_bundle(folder: Path, card: dict[str, Any], members: Sequence[tuple[int, Mapping[str, Any]]],
                    backbone: Path | bytes, config_text: str) -> Path:
    """Write a bundle into ``folder``: ``members`` are ``(fold, tensors)`` pairs, ``backbone`` the
    file :func:`bundle_backbone` chose."""
    tensors = {f"fold{fold}.{name}": value for fold, state in members for name, value in state.items()}
    return save_checked(folder, tensors, {**card, "format": BUNDLE_FORMAT},
                        files={BACKBONE_FILE: backbone, "config.yaml": config_text.encode()})


class _MemberSchema(BaseModel):
    fold: int = Field(ge=0)


class _ModelSchema(BaseModel):
    name: str
    in_dim: int = Field(gt=0)
    heads: list[tuple[str, int]]
    hidden: int = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    k_sample: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from wsi_hcc.mil.models import MODEL_NAMES

        if name not in MODEL_NAMES:
            raise ValueError(f"unknown MIL model {name!r} (known: {', '.join(MODEL_NAMES)})")
        return name


class _CardSchema(BaseModel):
    """What loading a bundle relies on; other keys are provenance and pass through."""

    class_names: list[str] = Field(min_length=2, max_length=2)
    grade_names: list[str] | None = None
    threshold: float = Field(ge=0, le=1, allow_inf_nan=False)
    temperature: float = Field(gt=0, allow_inf_nan=False)
    kind: Literal["best_fold", "ensemble"]
    model: _ModelSchema
    members: list[_MemberSchema] = Field(min_length=1)
    features: dict[str, Any]
    backbone: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _heads_fit_the_names(self):
        heads = dict(self.model.heads)
        if heads.get("label") != len(self.class_names):
            raise ValueError(f"the label head has {heads.get('label')} outputs for {len(self.class_names)} class names")
        if heads.get("grade") != (len(self.grade_names) if self.grade_names else None):
            raise ValueError(f"the grade head has {heads.get('grade')} outputs for grade names {self.grade_names}")
        for name, value, keys in (("features", self.features, ("backbone", "card")),
                                  ("backbone", self.backbone or {}, ("name", "file", "tiling", "feature_dtype")
                                   if self.backbone else ())):
            missing = [key for key in keys if key not in value]
            if missing:
                raise ValueError(f"{name} lacks {', '.join(missing)}")
        return self


@dataclass(frozen=True)
class MilCard:
    """A bundle's card, typed. ``raw`` is the card as written, for provenance."""

    class_names: tuple[str, ...]
    grade_names: tuple[str, ...]
    threshold: float
    temperature: float
    selection: str
    model: Mapping[str, Any]
    folds: tuple[int, ...]
    features: Mapping[str, Any]
    backbone: Mapping[str, Any] | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def training_data(self) -> Mapping[str, Any]:
        """What the model learnt from (``kind``: real, synthetic or mixed); empty for older bundles."""
        return self.raw.get("training_data") or {}

    @classmethod
    def from_dict(cls, card: Any, where: str | Path = "card.json") -> MilCard:
        """The card, checked: a card that lacks what loading needs or contradicts itself is one line."""
        if not isinstance(card, dict):
            raise WsiHccError(f"{where}: not a MIL bundle card (a {type(card).__name__}, not a mapping); "
                              f"pass the 'model' folder of a {_WRITER} run")
        try:
            checked = _CardSchema.model_validate(card)
        except ValidationError as exc:
            place, message = first_error(exc)
            raise WsiHccError(f"{where}: {place + ': ' if place else ''}{message}; the card is damaged or was "
                              f"edited: restore the bundle or rerun {_WRITER}") from None
        return cls(class_names=tuple(checked.class_names), grade_names=tuple(checked.grade_names or ()),
                   threshold=checked.threshold, temperature=checked.temperature, selection=checked.kind,
                   model=checked.model.model_dump() | {"heads": dict(checked.model.heads)},
                   folds=tuple(m.fold for m in checked.members), features=checked.features,
                   backbone=checked.backbone, raw=dict(card))


@dataclass(frozen=True)
class SlidePrediction:
    """What a MIL bundle says about one slide (a bag of ``N`` tiles), averaged over its members.

    ``label_probs`` are the calibrated slide probabilities over the card's ``class_names``;
    ``grade_probs`` over its ``grade_names`` (None without a grade head). ``tile_label_probs``
    ``(N, classes)`` and ``tile_grade_probs`` score each tile as a bag of one; ``attention`` ``(N,)``.
    """

    label: str
    label_probs: np.ndarray
    attention: np.ndarray
    tile_label_probs: np.ndarray
    grade: str | None = None
    grade_probs: np.ndarray | None = None
    tile_grade_probs: np.ndarray | None = None


@dataclass(frozen=True)
class MilBundle:
    card: MilCard
    models: tuple
    path: Path

    @property
    def has_backbone(self) -> bool:
        return self.card.backbone is not None

    @property
    def backbone_path(self) -> Path:
        return self.path / self._need_backbone()["file"]

    def tile_config(self) -> dict[str, Any]:
        """The tiling of the training stores (a ``TileConfig`` dump): slides are tiled the same way.

        A dump without ``jpeg_subsampling`` was written when JPEG tiles were 4:2:0; it keeps that.
        """
        tiling = dict(self._need_backbone()["tiling"])
        tiling.setdefault("jpeg_subsampling", "420")
        return tiling

    def create_backbone(self):
        """The feature backbone with the bundle's weights (a feature extractor: no classifier)."""
        from wsi_hcc.mil.handcrafted import entry_for_card
        from wsi_hcc.models import create_backbone

        entry = self._need_backbone()
        return create_backbone(entry["name"], num_classes=0, weights=self.backbone_path,
                               entry=entry_for_card(self.card.features["card"]))

    def _need_backbone(self) -> Mapping[str, Any]:
        if self.card.backbone is None:
            raise WsiHccError(f"{self.path}: this bundle has no feature backbone (made by an older wsi-hcc "
                              "train-mil); retrain it with this version")
        return self.card.backbone

    def predict(self, features: np.ndarray) -> SlidePrediction:
        """One bag ``(N, D)`` -> the slide's calibrated probabilities (mean over members), the
        decision at the card's threshold, attention and per-tile probabilities."""
        import torch

        from wsi_hcc.mil.metrics import softmax

        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        probs: dict[str, list[np.ndarray]] = {}
        tile_probs: dict[str, list[np.ndarray]] = {}
        attention = []
        with torch.inference_mode():
            for model in self.models:
                out = model(x)
                per_tile = model.tile_logits(x)
                for head, logits in out.logits.items():
                    t = self.card.temperature if head == "label" else 1.0
                    probs.setdefault(head, []).append(softmax(logits.numpy()[None], t)[0])
                    tile_probs.setdefault(head, []).append(softmax(per_tile[head].numpy(), t))
                attention.append(out.attention.numpy())
        mean = {head: np.mean(p, axis=0) for head, p in probs.items()}
        tiles = {head: np.mean(p, axis=0) for head, p in tile_probs.items()}
        grade = self.card.grade_names[int(mean["grade"].argmax())] if "grade" in mean else None
        positive = float(mean["label"][1]) >= self.card.threshold
        return SlidePrediction(label=self.card.class_names[int(positive)], label_probs=mean["label"],
                               attention=np.mean(attention, axis=0), tile_label_probs=tiles["label"], grade=grade,
                               grade_probs=mean.get("grade"), tile_grade_probs=tiles.get("grade"))


def load_mil_bundle(path: str | Path, device: str = "cpu") -> MilBundle:
    """Read a bundle folder written by ``wsi-hcc train-mil`` (JSON + safetensors; checks the hashes)."""
    from wsi_hcc.mil.models import build_mil_model

    path = Path(path)
    if not path.exists():
        raise WsiHccError(f"{path}: no such folder; point --model at a model folder: OUT/model of wsi-hcc train-mil, "
                          "train-patches or demo, or one made by wsi-hcc bundle")
    card, tensors = _read_legacy(path) or load_checked(path, card_format=BUNDLE_FORMAT, kind="a MIL bundle",
                                                       writer=_WRITER)
    typed = MilCard.from_dict(card, path / CARD_NAME)
    args = typed.model
    models = []
    for fold in typed.folds:
        prefix = f"fold{fold}."
        model = build_mil_model(args["name"], args["in_dim"], args["heads"], hidden=args["hidden"],
                                dropout=args["dropout"], k_sample=args["k_sample"])
        try:
            model.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        except RuntimeError as exc:
            raise WsiHccError(f"{path}: member fold {fold} does not fit the card's model ({str(exc).splitlines()[0]}); "
                              "restore the bundle or retrain") from None
        models.append(model.eval().to(device))
    return MilBundle(typed, tuple(models), path)


def _read_legacy(path: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Card and tensors of a bundle in an older layout (one safetensors file per member), or None."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        card = json.loads((path / CARD_NAME).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # the checked reader words the error
    if not isinstance(card, dict) or card.get("format") not in _LEGACY_FORMATS:
        return None
    for entry in card.get("members", []) + ([card["backbone"]] if card.get("backbone") else []):
        check_file(path / entry["file"], entry["sha256"])
    tensors = {}
    for member in card["members"]:
        try:
            state = load_file(str(path / member["file"]))
        except (SafetensorError, OSError) as exc:
            raise WsiHccError(f"{path / member['file']}: unreadable safetensors ({exc})") from None
        tensors.update({f"fold{member['fold']}.{k}": v for k, v in state.items()})
    return card, tensors
