"""Model folders of weights.safetensors and card.json: the round trip and every refusal, in one line."""

import json

import pytest
import torch

from wsi_hcc.errors import WsiHccError
from wsi_hcc.utils.checked_weights import CARD_NAME, WEIGHTS_NAME, card_sha256, load_checked, save_checked

FORMAT = "wsi_hcc.test/1"


def _load(folder):
    return load_checked(folder, card_format=FORMAT, kind="a test model",
                        writer="the test")


@pytest.fixture
def folder(tmp_path):
    return save_checked(tmp_path / "model", {"w": torch.arange(6.0).reshape(2, 3)}, {"format": FORMAT, "k": 1})


def test_round_trip_keeps_tensors_and_card_and_adds_provenance(folder):
    card, tensors = _load(folder)
    assert torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3))
    assert card["k"] == 1 and len(card["weights_sha256"]) == 64 and "torch" in card["versions"] and card["created"]
    assert sorted(p.name for p in folder.iterdir()) == [CARD_NAME, WEIGHTS_NAME]  # no partial files left


@pytest.mark.parametrize("damage,match", [
    (lambda f: (f / WEIGHTS_NAME).unlink(), "not a test model \\(weights.safetensors missing\\); pass the folder"),
    (lambda f: (f / CARD_NAME).write_text("{not json"), "damaged card \\(not JSON\\)"),
    (lambda f: (f / CARD_NAME).write_text(json.dumps({"format": "other/1"})), "format 'other/1' is not wsi_hcc.test/1"),
    (lambda f: (f / WEIGHTS_NAME).write_bytes((f / WEIGHTS_NAME).read_bytes()[:-1] + b"\0"), "checksum differs"),
])
def test_each_damage_is_one_line_naming_the_file(folder, damage, match):
    damage(folder)
    with pytest.raises(WsiHccError, match=match) as caught:
        _load(folder)
    assert "\n" not in str(caught.value) and str(folder) in str(caught.value)


def test_weights_that_are_not_safetensors_are_refused_without_unpickling(folder, monkeypatch):
    import hashlib
    import pickle

    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    data = b"not safetensors at all"
    (folder / WEIGHTS_NAME).write_bytes(data)
    card = {**json.loads((folder / CARD_NAME).read_text()), "weights_sha256": hashlib.sha256(data).hexdigest()}
    (folder / CARD_NAME).write_text(json.dumps({**card, "card_sha256": card_sha256(card)}))
    with pytest.raises(WsiHccError, match="not a safetensors file"):
        _load(folder)


def test_other_files_are_copied_checked_and_refused_when_changed(tmp_path):
    source = tmp_path / "backbone.bin"
    source.write_bytes(b"backbone bytes")
    folder = save_checked(tmp_path / "model", {"w": torch.ones(2)}, {"format": FORMAT},
                          files={"backbone.safetensors": source, "config.yaml": b"epochs: 2\n"})
    card, _ = _load(folder)
    assert (folder / "backbone.safetensors").read_bytes() == b"backbone bytes"
    assert sorted(card["files"]) == ["backbone.safetensors", "config.yaml"]
    assert not [p for p in folder.iterdir() if p.name.endswith(".partial")]
    (folder / "config.yaml").write_text("epochs: 3\n")
    with pytest.raises(WsiHccError, match="config.yaml: missing or not the file the card names"):
        _load(folder)


@pytest.mark.parametrize("given", [lambda f: f / CARD_NAME, lambda f: f / WEIGHTS_NAME, lambda f: f])
def test_a_model_is_found_from_its_folder_card_or_weights(folder, given):
    card, tensors = _load(given(folder))
    assert card["k"] == 1 and "w" in tensors


def test_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(WsiHccError, match="nomodel: no such folder; pass the folder that the test wrote"):
        _load(tmp_path / "nomodel")


def test_an_edited_card_is_refused_and_the_layout_of_the_file_does_not_matter(folder):
    card = json.loads((folder / CARD_NAME).read_text())
    (folder / CARD_NAME).write_text(json.dumps(card))  # same content, another layout: still the card
    assert _load(folder)[0]["k"] == 1
    (folder / CARD_NAME).write_text(json.dumps({**card, "k": 2}))
    with pytest.raises(WsiHccError, match="card.json: the card was changed after it was written"):
        _load(folder)


def test_the_card_alone_is_read_and_checked_without_the_weights(folder):
    from wsi_hcc.utils.checked_weights import read_card

    (folder / WEIGHTS_NAME).unlink()  # not read: building the model reads and checks it
    assert read_card(folder, card_format=FORMAT, kind="a test model", writer="the test")["k"] == 1
    card = json.loads((folder / CARD_NAME).read_text())
    (folder / CARD_NAME).write_text(json.dumps({**card, "k": 2}))
    with pytest.raises(WsiHccError, match="the card was changed after it was written"):
        read_card(folder, card_format=FORMAT, kind="a test model", writer="the test")
