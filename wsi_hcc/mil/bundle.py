"""The MIL model bundle: a folder with safetensors weights, a JSON card and the training config.

Layout::

    model/
      card.json          classes, grades, threshold, temperature, model arguments, the feature
                         provenance of the training stores (digest, backbone and its card),
                         versions and the sha256 of every weights file
      fold<k>.safetensors  one per member (the best fold, or every fold for an ensemble)
      config.yaml        the training config

Loading reads JSON and safetensors only: nothing is ever unpickled. A bundle refuses features from
another model than the one it was trained on (the feature digest must match).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WsiHccError
from ..models import file_sha256

__all__ = ["BUNDLE_FORMAT", "MilBundle", "load_mil_bundle", "save_member"]

BUNDLE_FORMAT = "wsi-hcc-mil-bundle/1"


def save_member(model, path: Path) -> str:
    """Write ``model``'s tensors as safetensors at ``path``; returns the file's sha256."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path),
              metadata={"format": BUNDLE_FORMAT})
    return file_sha256(path)


@dataclass
class MilBundle:
    card: dict[str, Any]
    models: list

    def predict(self, features: np.ndarray) -> dict[str, Any]:
        """One bag ``(N, D)`` -> calibrated probabilities per head (mean over members), the decision
        at the card's threshold and the (member-averaged) attention ``(N,)``."""
        import torch

        from .metrics import softmax

        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        temperature = float(self.card.get("temperature") or 1.0)
        probs: dict[str, list[np.ndarray]] = {}
        attention = []
        with torch.inference_mode():
            for model in self.models:
                out = model(x)
                for head, logits in out.logits.items():
                    t = temperature if head == "label" else 1.0
                    probs.setdefault(head, []).append(softmax(logits.numpy()[None], t)[0])
                attention.append(out.attention.numpy())
        mean = {head: np.mean(p, axis=0) for head, p in probs.items()}
        positive = float(mean["label"][1])
        result = {"probs": mean, "attention": np.mean(attention, axis=0),
                  "label": self.card["class_names"][int(positive >= self.card["threshold"])]}
        if "grade" in mean:
            result["grade"] = self.card["grade_names"][int(mean["grade"].argmax())]
        return result


def load_mil_bundle(path: str | Path, device: str = "cpu") -> MilBundle:
    """Read a bundle folder written by ``wsi-hcc train-mil`` (JSON + safetensors; checks the hashes)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import build_mil_model

    path = Path(path)
    card_path = path / "card.json"
    try:
        card = json.loads(card_path.read_text())
    except FileNotFoundError:
        raise WsiHccError(f"{path}: not a MIL bundle (no card.json); point at the 'model' folder of a "
                          "wsi-hcc train-mil run") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise WsiHccError(f"{card_path}: unreadable bundle card ({exc}); rerun wsi-hcc train-mil") from None
    if card.get("format") != BUNDLE_FORMAT:
        raise WsiHccError(f"{card_path}: not a {BUNDLE_FORMAT} card; rerun wsi-hcc train-mil")
    args = card["model"]
    models = []
    for member in card["members"]:
        weights = path / member["file"]
        if not weights.is_file() or file_sha256(weights) != member["sha256"]:
            raise WsiHccError(f"{weights}: missing or not the file the card names (sha256 differs); "
                              "copy the whole bundle folder again")
        try:
            state = load_file(str(weights), device=device)
        except (SafetensorError, OSError) as exc:
            raise WsiHccError(f"{weights}: unreadable safetensors ({exc})") from None
        model = build_mil_model(args["name"], args["in_dim"], dict(args["heads"]), hidden=args["hidden"],
                                dropout=args["dropout"], k_sample=args["k_sample"])
        model.load_state_dict(state, strict=True)
        models.append(model.eval().to(device))
    return MilBundle(card, models)
