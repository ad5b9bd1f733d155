"""The MIL model bundle: a folder with safetensors weights, a JSON card and the training config.

Layout::

    model/
      card.json            classes, grades, threshold, temperature, model arguments, the feature
                           provenance of the training stores (digest, backbone and its card), the
                           tiling the stores were made with, versions and the sha256 of every file
      backbone.safetensors the feature backbone's weights (with its model card inside)
      fold<k>.safetensors  one per member (the best fold, or every fold for an ensemble)
      config.yaml          the training config

Everything ``wsi-hcc classify`` needs to go from a slide to a prediction is in the folder. Loading
reads JSON and safetensors only: nothing is ever unpickled, and every file's sha256 is checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.models import file_sha256

__all__ = ["BUNDLE_FORMAT", "BACKBONE_FILE", "MilBundle", "SlidePrediction", "load_mil_bundle", "save_member",
           "bundle_backbone"]

BUNDLE_FORMAT = "wsi-hcc-mil-bundle/2"
BACKBONE_FILE = "backbone.safetensors"


def save_member(model, path: Path) -> str:
    """Write ``model``'s tensors as safetensors at ``path``; returns the file's sha256."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": BUNDLE_FORMAT})
    return file_sha256(path)


def bundle_backbone(weights: Path, dest_dir: Path, backbone: str, card: dict[str, Any], tiling: dict[str, Any],
                    feature_dtype: str) -> dict[str, Any]:
    """Put the feature backbone's weights into a bundle folder as safetensors and describe them.

    ``card`` is the backbone's model card as the features recorded it. Our own safetensors are
    copied byte for byte, so features already extracted with them are recognised (same digest) and
    reused by ``classify``; other formats are converted once.
    """
    import shutil

    from wsi_hcc.mil.handcrafted import entry_for_card
    from wsi_hcc.models import create_backbone, save_weights, state_sha256

    dest = dest_dir / BACKBONE_FILE
    model = create_backbone(backbone, num_classes=0, weights=weights, entry=entry_for_card(card))
    if weights.suffix == ".safetensors":
        shutil.copyfile(weights, dest)
    else:
        save_weights(model, model.card, dest)
    return {"name": backbone, "file": BACKBONE_FILE, "sha256": file_sha256(dest),
            "model_sha256": state_sha256(model), "source": str(weights), "feature_dtype": feature_dtype,
            "tiling": tiling}


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


@dataclass
class MilBundle:
    card: dict[str, Any]
    models: list
    path: Path | None = None

    @property
    def has_backbone(self) -> bool:
        return bool(self.card.get("backbone"))

    def tile_config(self) -> dict[str, Any]:
        """The tiling of the training stores (a ``TileConfig`` dump): slides are tiled the same way."""
        self._need_backbone()
        return dict(self.card["backbone"]["tiling"])

    def create_backbone(self):
        """The feature backbone with the bundle's weights (a feature extractor: no classifier)."""
        from wsi_hcc.mil.handcrafted import entry_for_card
        from wsi_hcc.models import create_backbone

        entry = self._need_backbone()
        return create_backbone(entry["name"], num_classes=0, weights=self.path / entry["file"],
                               entry=entry_for_card(self.card["features"]["card"]))

    def _need_backbone(self) -> dict[str, Any]:
        if not self.has_backbone:
            raise WsiHccError(f"{self.path}: this bundle has no feature backbone (made by an older wsi-hcc "
                              "train-mil); retrain it with this version")
        return self.card["backbone"]

    def predict(self, features: np.ndarray) -> SlidePrediction:
        """One bag ``(N, D)`` -> the slide's calibrated probabilities (mean over members), the
        decision at the card's threshold, attention and per-tile probabilities."""
        import torch

        from wsi_hcc.mil.metrics import softmax

        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        temperature = float(self.card.get("temperature") or 1.0)
        probs: dict[str, list[np.ndarray]] = {}
        tile_probs: dict[str, list[np.ndarray]] = {}
        attention = []
        with torch.inference_mode():
            for model in self.models:
                out = model(x)
                per_tile = model.tile_logits(x)
                for head, logits in out.logits.items():
                    t = temperature if head == "label" else 1.0
                    probs.setdefault(head, []).append(softmax(logits.numpy()[None], t)[0])
                    tile_probs.setdefault(head, []).append(softmax(per_tile[head].numpy(), t))
                attention.append(out.attention.numpy())
        mean = {head: np.mean(p, axis=0) for head, p in probs.items()}
        tiles = {head: np.mean(p, axis=0) for head, p in tile_probs.items()}
        grade = self.card["grade_names"][int(mean["grade"].argmax())] if "grade" in mean else None
        return SlidePrediction(label=self.card["class_names"][int(float(mean["label"][1]) >= self.card["threshold"])],
                               label_probs=mean["label"], attention=np.mean(attention, axis=0),
                               tile_label_probs=tiles["label"], grade=grade, grade_probs=mean.get("grade"),
                               tile_grade_probs=tiles.get("grade"))


def load_mil_bundle(path: str | Path, device: str = "cpu") -> MilBundle:
    """Read a bundle folder written by ``wsi-hcc train-mil`` (JSON + safetensors; checks the hashes)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from wsi_hcc.mil.models import build_mil_model

    path = Path(path)
    if not path.exists():
        raise WsiHccError(f"{path}: no such folder; point --model at the 'model' folder of a wsi-hcc train-mil run")
    card_path = path / "card.json"
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise WsiHccError(f"{path}: not a MIL bundle (no card.json); point at the 'model' folder of a "
                          "wsi-hcc train-mil run") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise WsiHccError(f"{card_path}: unreadable bundle card ({exc}); rerun wsi-hcc train-mil") from None
    if card.get("format") not in (BUNDLE_FORMAT, "wsi-hcc-mil-bundle/1"):
        raise WsiHccError(f"{card_path}: not a {BUNDLE_FORMAT} card; rerun wsi-hcc train-mil")
    args = card["model"]
    models = []
    for entry in card.get("members", []) + ([card["backbone"]] if card.get("backbone") else []):
        _check_file(path / entry["file"], entry["sha256"])
    for member in card["members"]:
        weights = path / member["file"]
        try:
            state = load_file(str(weights), device=device)
        except (SafetensorError, OSError) as exc:
            raise WsiHccError(f"{weights}: unreadable safetensors ({exc})") from None
        model = build_mil_model(args["name"], args["in_dim"], dict(args["heads"]), hidden=args["hidden"],
                                dropout=args["dropout"], k_sample=args["k_sample"])
        model.load_state_dict(state, strict=True)
        models.append(model.eval().to(device))
    return MilBundle(card, models, path)


def _check_file(path: Path, sha256: str) -> None:
    if not path.is_file() or file_sha256(path) != sha256:
        raise WsiHccError(f"{path}: missing or not the file the card names (sha256 differs); "
                          "copy the whole bundle folder again")
