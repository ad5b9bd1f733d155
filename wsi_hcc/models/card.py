"""Model cards: everything needed to feed a model the data it was trained on.

A card travels with the weights (inside our safetensors files) so a model is never used with the
wrong resolution, channel order, scaling or stain normalisation.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["ModelCard", "tiling_from_card"]


@dataclass(frozen=True)
class ModelCard:
    """What a patch model expects and what it outputs.

    Pixels reach the model as ``((uint8 in channel_order) * scale - mean) / std``, NCHW, resized to
    ``input_px`` when the store's tiles differ. ``target_mpp`` and ``tile_px`` are the tiling the
    model was trained on; inference tiling is derived from them.

    ``class_names_source`` and ``mpp_source`` say how much to trust ``class_names`` and
    ``target_mpp``: ``"stated"`` (by whoever trained the model: our training runs record them),
    ``"inferred"`` (reasoned from indirect evidence, see ``notes``), ``"unnamed"`` (no names were
    published: ``class_0 ..``) or ``"assumed"`` (a guess: the resolution of a released model that
    never said).
    """

    architecture: str
    num_classes: int
    class_names: tuple[str, ...]
    feature_dim: int
    input_px: int = 224
    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    target_mpp: float = 0.5
    tile_px: int = 224
    stain_reference: dict[str, Any] | None = None
    weights_sha256: str | None = None
    cam_layer: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    class_names_source: str = "stated"
    mpp_source: str = "stated"

    @property
    def assumptions(self) -> tuple[str, ...]:
        """What on this card is not known for a fact, in words for a report ("class names inferred")."""
        return tuple(f"{what} {source}" for what, source in (("class names", self.class_names_source),
                                                              ("resolution", self.mpp_source))
                     if source != "stated")

    def __post_init__(self):
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"channel_order must be RGB or BGR, not {self.channel_order!r}")
        if self.num_classes and len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    def with_classes(self, num_classes: int, class_names: tuple[str, ...] | None = None) -> ModelCard:
        """The same card for a head with ``num_classes`` outputs (0: a feature extractor)."""
        if class_names is None:
            class_names = (self.class_names if len(self.class_names) == num_classes
                           else tuple(f"class_{i}" for i in range(num_classes)))
        return replace(self, num_classes=num_classes, class_names=tuple(class_names))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("class_names", "mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


def tiling_from_card(card: ModelCard, target_mpp: float | None = None, tile_px: int | None = None) -> tuple[float, int]:
    """The ``(target_mpp, tile_px)`` to tile for ``card``; explicit values must agree with it."""
    from wsi_hcc.errors import ConfigError

    for flag, given, expected in (("--mpp", target_mpp, card.target_mpp), ("--tile-px", tile_px, card.tile_px)):
        if given is not None and abs(given - expected) > 1e-9 * max(1.0, expected):
            raise ConfigError(f"{flag} {given:g} contradicts {card.architecture}'s card ({expected:g}); "
                              f"drop {flag} or --for-model")
    return card.target_mpp, card.tile_px
