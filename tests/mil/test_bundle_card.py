"""A MIL bundle's card is hashed and validated: an edited or self-contradicting card is one line,
never obeyed and never a traceback."""

import json

import numpy as np
import pytest

from wsi_hcc.errors import WsiHccError
from wsi_hcc.mil import build_mil_model, load_mil_bundle
from wsi_hcc.mil.bundle import save_mil_bundle
from wsi_hcc.utils.checked_weights import card_sha256

CARD = {"kind": "best_fold", "class_names": ["non-HCC", "HCC"], "grade_names": ["G1", "G2", "G3"], "threshold": 0.5,
        "temperature": 1.5, "members": [{"fold": 0}], "features": {"backbone": "resnet34", "card": {}},
        "backbone": None, "model": {"name": "gated", "in_dim": 8, "heads": [["label", 2], ["grade", 3]],
                                    "hidden": 16, "dropout": 0.0, "k_sample": 8}}


@pytest.fixture
def bundle(tmp_path):
    model = build_mil_model("gated", 8, {"label": 2, "grade": 3}, hidden=16)
    return save_mil_bundle(tmp_path / "model", CARD, [(0, model.state_dict())], b"backbone bytes", "mil: {}\n")


def _rewrite(bundle, change, rehash=True):
    card = json.loads((bundle / "card.json").read_text())
    change(card)
    if rehash:  # as a buggy tool would write it: consistent hash, wrong content
        card["card_sha256"] = card_sha256(card)
    (bundle / "card.json").write_text(json.dumps(card))


def test_a_valid_bundle_loads_typed_and_predicts(bundle):
    loaded = load_mil_bundle(bundle)
    assert loaded.card.temperature == 1.5 and loaded.card.model["heads"] == {"label": 2, "grade": 3}
    prediction = loaded.predict(np.random.default_rng(0).normal(size=(5, 8)))
    assert prediction.grade in ("G1", "G2", "G3") and prediction.label_probs.shape == (2,)


def test_an_edit_without_the_writer_is_refused(bundle):
    _rewrite(bundle, lambda card: card.update(threshold=0.1), rehash=False)
    with pytest.raises(WsiHccError, match="card was changed after it was written"):
        load_mil_bundle(bundle)


@pytest.mark.parametrize("change,match", [
    (lambda c: c.update(temperature=-1), "temperature: Input should be greater than 0"),
    (lambda c: c.update(threshold=float("nan")), "threshold: Input should be a finite number"),
    (lambda c: c.update(class_names=["a", "b", "c"]), "class_names: List should have at most 2 items"),
    (lambda c: c.update(grade_names=["G1", "G2"]), "the grade head has 3 outputs for grade names"),
    (lambda c: c["model"].update(heads=[["label", 3], ["grade", 3]]), "the label head has 3 outputs"),
    (lambda c: c.pop("members"), "members: Field required"),
    (lambda c: c["model"].update(name="transformer"), "unknown MIL model 'transformer'"),
    (lambda c: c["features"].pop("card"), "features lacks card"),
    (lambda c: c["model"].update(in_dim=9), "member fold 0 does not fit the card's model"),
])
def test_a_card_that_contradicts_itself_is_one_line(bundle, change, match):
    _rewrite(bundle, change)
    with pytest.raises(WsiHccError, match=match) as caught:
        load_mil_bundle(bundle)
    assert "\n" not in str(caught.value) and str(bundle) in str(caught.value)


def test_a_card_that_is_not_a_mapping_is_one_line(bundle):
    (bundle / "card.json").write_text("[1, 2]")
    with pytest.raises(WsiHccError, match="format None is not wsi-hcc-mil-bundle/3"):
        load_mil_bundle(bundle)
