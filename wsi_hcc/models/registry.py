"""The backbone registry: one name builds a model, its card, and loads local weights into it.

Registered names (``resnet34``, ``livernet``) carry cards with their data contract; any other timm
model name works too, with timm's own normalisation and an assumed 0.5 µm/px.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from wsi_hcc.models.card import ModelCard
from wsi_hcc.models.weights import WeightsError, card_from_weights, file_sha256, read_model_folder, read_state_dict

__all__ = ["BackboneEntry", "register_backbone", "create_backbone", "list_backbones", "get_entry", "card_for"]

# suffix -> reader returning (state dict, num_classes) for weights in another framework's format
ForeignLoader = Callable[[Path], tuple[dict, int]]


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    build: Callable[..., object]
    card: ModelCard
    classifier: str
    foreign_loaders: dict[str, ForeignLoader] = field(default_factory=dict)
    known_weights: dict[str, ModelCard] = field(default_factory=dict)  # sha256 of a released file -> its card


_REGISTRY: dict[str, BackboneEntry] = {}


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    if entry.name in _REGISTRY:
        raise ValueError(f"backbone {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def get_entry(name: str) -> BackboneEntry:
    if name in _REGISTRY:
        return _REGISTRY[name]
    import timm

    if timm.is_model(name):
        return _timm_entry(name)
    raise WeightsError(f"unknown backbone {name!r}; choose one of {', '.join(list_backbones())} "
                       "or a timm model name (timm.list_models())")


def card_for(model: str | Path) -> ModelCard:
    """The card of a registered name or timm model, or of one of our safetensors weight files,
    without building the model: what inference tiling is derived from."""
    path = Path(model)
    if path.suffix == ".safetensors":
        card = card_from_weights(path)
        if card is None:
            raise WeightsError(f"{path}: carries no model card; name the backbone instead (e.g. resnet34)")
        return card
    return get_entry(str(model)).card


def _timm_entry(name: str) -> BackboneEntry:
    import timm

    probe = timm.create_model(name, pretrained=False, num_classes=2)
    cfg = probe.pretrained_cfg
    input_px = int(cfg.get("input_size", (3, 224, 224))[-1])
    card = ModelCard(architecture=name, num_classes=2, class_names=("class_0", "class_1"),
                     feature_dim=int(probe.num_features), input_px=input_px, tile_px=input_px,
                     mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                     std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
                     mpp_source="assumed", notes="timm model without a registered card: 0.5 um/px assumed")
    classifier = cfg.get("classifier") or "head"
    return BackboneEntry(name=name, build=lambda num_classes, **kw: timm.create_model(
        name, pretrained=False, num_classes=num_classes, **kw), card=card,
        classifier=classifier if isinstance(classifier, str) else classifier[0])


def create_backbone(name: str, num_classes: int | None = None, weights: str | Path | None = None, *,
                    entry: BackboneEntry | None = None, **kwargs):
    """Build ``name`` and optionally load local ``weights``; the model's ``.card`` describes it.

    ``num_classes=None`` keeps the class count of the weights (or the card's default);
    ``num_classes=0`` returns a feature extractor whose output has ``card.feature_dim`` values.
    ``entry`` builds a backbone that is not registered (one a saved card describes), so loading a
    model never changes the registry.
    """
    entry = entry or get_entry(name)
    card = entry.card
    state = None
    if weights is not None:
        path = Path(weights)
        loader = None if path.is_dir() else entry.foreign_loaders.get(path.suffix.lower())
        if path.is_dir():
            card, state = read_model_folder(path)
            if card.architecture != entry.name:
                raise WeightsError(f"{path}: a {card.architecture} model folder; use --arch {card.architecture}")
            weight_classes = _classes_in(state, entry)
        elif loader is not None:
            if not path.is_file():
                raise WeightsError(f"{path}: weights file not found")
            state, weight_classes = loader(path)
        else:
            state = read_state_dict(path)
            card = card_from_weights(path) or card
            weight_classes = _classes_in(state, entry)
        model = entry.build(num_classes=weight_classes, **kwargs)
        _load_strict(model, state, path, name)
        card = card.with_classes(weight_classes) if card.num_classes != weight_classes else card
        if not path.is_dir():
            sha256 = file_sha256(path)
            if sha256 in entry.known_weights:
                card = entry.known_weights[sha256]
            elif loader is not None and entry.known_weights:  # another file of a released format: names unknown
                card = replace(card.with_classes(weight_classes, tuple(f"class_{i}" for i in range(weight_classes))),
                               class_names_source="unnamed", notes=f"{card.notes} Weights not among the released "
                               "files: class names unknown.")
            card = replace(card, weights_sha256=sha256)
    else:
        weight_classes = card.num_classes if num_classes is None else num_classes
        model = entry.build(num_classes=weight_classes, **kwargs)
        card = card.with_classes(weight_classes)
    if num_classes is not None and num_classes != weight_classes:
        _replace_classifier(model, entry.classifier, num_classes)
        card = card.with_classes(num_classes)
    model.card = card
    return model


def _classes_in(state: dict, entry: BackboneEntry) -> int:
    """Outputs of the weights' classifier; 0 for weights saved from a feature extractor (no classifier)."""
    key = f"{entry.classifier}.weight"
    return int(state[key].shape[0]) if key in state else 0


def _load_strict(model, state: dict, path: Path, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise WeightsError(f"{path}: does not fit backbone {name!r} ({detail})") from None


def _replace_classifier(model, classifier: str, num_classes: int) -> None:
    from torch import nn

    parent_path, _, attr = classifier.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    old = getattr(parent, attr)
    in_features = getattr(old, "in_features", None) or model.num_features  # an Identity has no in_features
    setattr(parent, attr, nn.Linear(in_features, num_classes) if num_classes else nn.Identity())
    if hasattr(model, "num_classes"):
        model.num_classes = num_classes
