"""Attention-MIL: model contracts, patient-level folds, metrics against scikit-learn, the bundle,
and ``train-mil`` end to end on a tiny cohort of feature stores (fast; the known-answer proof is in
test_mil_synthetic.py)."""

from __future__ import annotations

import csv
import dataclasses
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr
from click.testing import CliRunner

from wsi_hcc.errors import WsiHccError
from wsi_hcc.mil import MODEL_NAMES, build_mil_model, load_mil_bundle, patient_folds, split_validation
from wsi_hcc.mil.metrics import (
    binary_metrics,
    expected_calibration_error,
    fit_temperature,
    grade_metrics,
    softmax,
    youden_threshold,
)
from wsi_hcc.training.datasets import SlideLabel

HEADS = {"label": 2, "grade": 3}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_returns_logits_per_head_and_attention_per_tile(name):
    torch.manual_seed(0)
    model = build_mil_model(name, 15, HEADS).eval()
    bag = torch.randn(37, 15)
    out = model(bag)
    assert {h: tuple(v.shape) for h, v in out.logits.items()} == {"label": (2,), "grade": (3,)}
    assert out.attention.shape == (37,) and (out.attention >= 0).all()
    assert torch.isclose(out.attention.sum(), torch.tensor(1.0), atol=1e-5)
    assert out.attention_all.shape[1] == 37
    # (1, N, D) is the same bag; tile order does not matter
    torch.testing.assert_close(model(bag[None]).logits["label"], out.logits["label"])
    perm = torch.randperm(37)
    shuffled = model(bag[perm])
    torch.testing.assert_close(shuffled.logits["label"], out.logits["label"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled.attention, out.attention[perm], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 15\)"):
        model(torch.randn(4, 16))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tile_logits_score_each_tile_as_a_bag_of_one(name):
    torch.manual_seed(0)
    model = build_mil_model(name, 6, {"label": 2, "grade": 3}, hidden=8).eval()
    x = torch.randn(5, 6)
    with torch.no_grad():
        per_tile = model.tile_logits(x)
        for i in range(5):
            alone = model(x[i:i + 1]).logits
            for head in ("label", "grade"):
                assert per_tile[head].shape == (5, model.heads[head])
                torch.testing.assert_close(per_tile[head][i], alone[head])


@pytest.mark.parametrize("name", ["clam_sb", "clam_mb"])
def test_clam_instance_loss_in_training_only(name):
    torch.manual_seed(0)
    model = build_mil_model(name, 15, {"label": 2})
    assert model.k_sample == 8 and model.embed[0].out_features == 512
    assert model.attention.v[0].out_features == 256
    model.train()
    out = model(torch.randn(40, 15), label=1)
    assert out.instance_loss is not None and out.instance_loss.ndim == 0 and out.instance_loss > 0
    out.instance_loss.backward()
    assert model.instance_classifiers[1].weight.grad is not None
    assert model(torch.randn(3, 15), label=0).instance_loss is not None  # k shrinks to fit a small bag
    model.eval()
    assert model(torch.randn(40, 15), label=1).instance_loss is None
    if name == "clam_mb":
        assert model(torch.randn(40, 15)).attention_all.shape == (2, 40)


def test_gated_attention_is_tanh_times_sigmoid_softmaxed_over_tiles():
    torch.manual_seed(0)
    model = build_mil_model("gated", 6, {"label": 2}, dropout=0.0).eval()
    x = torch.randn(9, 6)
    h = model.embed(x)
    att = model.attention
    scores = att.w(torch.tanh(att.v[0](h)) * torch.sigmoid(att.u[0](h)))[:, 0]
    expected = torch.softmax(scores, dim=0)
    out = model(x)
    torch.testing.assert_close(out.attention, expected)
    torch.testing.assert_close(out.logits["label"], model.classifiers["label"](expected @ h))


def _cohort(n_patients=30, seed=0):
    rng = np.random.default_rng(seed)
    slides = []
    for p in range(n_patients):
        label = "HCC" if p % 3 else "non-HCC"
        for s in range(int(rng.integers(1, 4))):
            slides.append(SlideLabel(f"p{p}_s{s}", f"p{p}", label))
    return slides


def test_patient_folds_never_share_a_patient_and_cover_every_slide():
    slides = _cohort()
    patient_of = {s.slide: s.patient for s in slides}
    for seed in range(5):
        folds = patient_folds(slides, 5, seed)
        assert sorted(x for f in folds for x in f) == sorted(patient_of)
        patients = [{patient_of[x] for x in f} for f in folds]
        for i in range(5):
            for j in range(i + 1, 5):
                assert not patients[i] & patients[j]
        for f in folds:  # stratified: both classes in every fold
            assert {s.label for s in slides if s.slide in f} == {"HCC", "non-HCC"}
        rest = [s for s in slides if s.slide not in folds[0]]
        train, validation = split_validation(rest, 0.2, seed)
        assert not {patient_of[x] for x in train} & {patient_of[x] for x in validation}
        assert {s.label for s in rest if s.slide in validation} == {"HCC", "non-HCC"}
    assert patient_folds(slides, 5, 3) == patient_folds(slides, 5, 3)
    # too few patients: the flag that fixes it
    three = [SlideLabel(f"s{i}", f"p{i}", "HCC") for i in range(3)]
    with pytest.raises(WsiHccError, match=r"^3 patients cannot make 5 folds; pass --folds 3 or fewer$"):
        patient_folds(three, 5)
    with pytest.raises(WsiHccError, match=r"^1 patient cannot make 2 folds; add patients$"):
        patient_folds(three[:1], 2)


def test_binary_and_grade_metrics_equal_scikit_learn():
    from sklearn.metrics import (
        balanced_accuracy_score,
        cohen_kappa_score,
        confusion_matrix,
        recall_score,
        roc_auc_score,
        roc_curve,
    )

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.stack([1 - labels, labels], 1) * 1.2
    probs = softmax(logits)
    threshold = youden_threshold(labels, probs[:, 1])
    fpr, tpr, thr = roc_curve(labels, probs[:, 1])
    at = (probs[:, 1] >= threshold).astype(int)
    youden = recall_score(labels, at, pos_label=1) + recall_score(labels, at, pos_label=0) - 1
    assert youden == pytest.approx(np.max(tpr - fpr))  # the threshold reaches the best ROC point
    assert thr[np.argmax(tpr - fpr) + 1] < threshold < thr[np.argmax(tpr - fpr)]  # midway, on no slide's score
    m = binary_metrics(labels, probs, threshold, ["non-HCC", "HCC"], bootstrap=200)
    predicted = (probs[:, 1] >= threshold).astype(int)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probs[:, 1]))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, predicted))
    assert m["sensitivity"] == pytest.approx(recall_score(labels, predicted, pos_label=1))
    assert m["specificity"] == pytest.approx(recall_score(labels, predicted, pos_label=0))
    assert m["confusion_matrix"] == confusion_matrix(labels, predicted).tolist()
    low, high = m["roc_auc_ci95"]
    assert low < m["roc_auc"] < high
    assert m["argmax"]["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, probs.argmax(1)))
    # ECE by its definition, written out here independently
    conf, pred = probs.max(1), probs.argmax(1)
    ece = 0.0
    for lo in np.arange(10) / 10:
        members = (conf > lo) & (conf <= lo + 0.1)
        if members.any():
            ece += members.mean() * abs((pred[members] == labels[members]).mean() - conf[members].mean())
    assert m["ece"] == pytest.approx(ece)

    grades = rng.integers(0, 4, 120)
    grade_probs = softmax(rng.normal(size=(120, 4)) + np.eye(4)[grades] * 1.5)
    grades_with_missing = grades.copy()
    grades_with_missing[:10] = -1
    g = grade_metrics(grades_with_missing, grade_probs, ["G1", "G2", "G3", "G4"])
    kept, kept_probs = grades[10:], grade_probs[10:]
    assert g["n_slides"] == 110
    assert g["quadratic_weighted_kappa"] == pytest.approx(
        cohen_kappa_score(kept, kept_probs.argmax(1), weights="quadratic"))
    assert g["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(kept, kept_probs.argmax(1)))
    assert g["roc_auc"] == pytest.approx(roc_auc_score(kept, kept_probs, multi_class="ovr", average="macro"))
    assert g["confusion_matrix"] == confusion_matrix(kept, kept_probs.argmax(1)).tolist()


def test_temperature_scaling_reduces_nll_of_overconfident_logits():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 400)
    logits = (rng.normal(size=(400, 2)) + np.stack([1 - labels, labels], 1)) * 6  # far too confident
    t = fit_temperature(logits, labels)
    assert t > 2
    assert log_loss(labels, softmax(logits, t)) < log_loss(labels, softmax(logits))
    assert expected_calibration_error(labels, softmax(logits, t)) < expected_calibration_error(labels, softmax(logits))


# ---- train-mil end to end on a tiny cohort -------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    """One real tiled store with colour_texture features, copied to 16 slides whose features are replaced
    by a known signal: tumour slides have a few tiles shifted in feature 0."""
    from wsi_hcc.mil.handcrafted import register_colour_texture
    from wsi_hcc.pipelines.features import run_features
    from wsi_hcc.pipelines.tile import run_tile
    from wsi_hcc.synth import write_synthetic_slide
    from wsi_hcc.tiling.config import TileConfig

    root = tmp_path_factory.mktemp("mil_tiny")
    slide = write_synthetic_slide(root / "base.svs", size_px=(512, 512), mpp=0.5, seed=3)
    assert run_tile([slide.path], root / "base", TileConfig(target_mpp=1.0, tile_px=32, qc=False)).count("done") == 1
    backbone = register_colour_texture("colour_texture_test", 1.0, 32)
    assert run_features([root / "base"], root / "base", backbone, device="cpu").count("done") == 1
    base = root / "base" / "base.zarr"
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        stem = f"t{i:02d}"
        store = root / "stores" / f"{stem}.zarr"
        shutil.copytree(base, store)
        features = zarr.open_array(str(store / "features"), mode="r+")
        x = rng.normal(size=features.shape).astype(np.float32)
        tumour = i % 2 == 0
        if tumour:
            x[:5, 0] += 4.0
        features[:] = x.astype(features.dtype)
        rows.append(f"{stem},pat{i // 2 if i < 4 else i},{'HCC' if tumour else 'non-HCC'},"
                    f"{['G1', 'G2', 'G3'][i % 3] if tumour else ''}\n")
    (root / "slides.csv").write_text("slide,patient,label,grade\n" + "".join(rows))
    config = {"stores": [str(root / "stores")], "labels_csv": str(root / "slides.csv"),
              "class_names": ["non-HCC", "HCC"], "grade_names": ["G1", "G2", "G3"],
              "model": {"name": "gated", "hidden": 16, "dropout": 0.0}, "folds": 3, "epochs": 4, "patience": 2,
              "lr": 3e-3, "bootstrap": 50, "device": "cpu", "max_tiles": 30, "cpu_threads": 1,
              # the stores were copied away from the random weights wsi-hcc features kept beside "base"
              "backbone_weights": str(next((root / "base").glob("colour_texture_test-random-*.safetensors")))}
    path = root / "mil.yaml"
    path.write_text(yaml.safe_dump({"mil": config}))
    return root, path


def _as_legacy_bundle(bundle, dest):
    """The same bundle in the wsi-hcc-mil-bundle/2 layout: one fold<k>.safetensors per member."""
    import shutil

    from safetensors.torch import load_file, save_file

    from wsi_hcc.models import file_sha256

    shutil.copytree(bundle, dest)
    card = json.loads((dest / "card.json").read_text())
    tensors = load_file(str(dest / "weights.safetensors"))
    (dest / "weights.safetensors").unlink()
    for member in card["members"]:
        prefix, name = f"fold{member['fold']}.", f"fold{member['fold']}.safetensors"
        save_file({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, str(dest / name))
        member.update(file=name, sha256=file_sha256(dest / name))
    del card["files"], card["weights_sha256"]
    (dest / "card.json").write_text(json.dumps({**card, "format": "wsi-hcc-mil-bundle/2"}))
    return dest


def test_train_mil_writes_metrics_pictures_and_a_bundle_and_skips_finished_folds(tiny_cohort, monkeypatch):
    from wsi_hcc.cli.mil import train_mil

    root, config = tiny_cohort
    out = root / "run"
    result = CliRunner().invoke(train_mil, ["--config", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 folds trained, 0 already done" in result.output and "grade kappa" in result.output
    for name in ("metrics.json", "predictions.csv", "roc.png", "reliability.png", "confusion.png",
                 "grade_confusion.png", "splits.json", "run-manifest.json", "model/card.json", "model/config.yaml"):
        assert (out / name).is_file(), name
    assert not list(out.rglob(".*partial"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["per_fold"]) == {"fold0", "fold1", "fold2"}
    pooled = metrics["pooled"]["label"]
    assert pooled["n_slides"] == 16 and pooled["threshold"] == "per fold"
    assert {"roc_auc", "roc_auc_ci95", "balanced_accuracy", "sensitivity", "specificity", "ece"} <= set(pooled)
    assert "quadratic_weighted_kappa" in metrics["pooled"]["grade"]
    with open(out / "predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    assert {r["predicted"] for r in predictions} == {"non-HCC", "HCC"}
    for row in predictions:  # a grade is called only for a slide called HCC
        assert (row["predicted_grade"] in ("G1", "G2", "G3")) == (row["predicted"] == "HCC"), row
    splits = json.loads((out / "splits.json").read_text())["folds"]
    patients = [set(f["patients"]) for f in splits]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    for f in splits:
        assert not set(f["test"]) & (set(f["train"]) | set(f["validation"]))
        assert not set(f["train"]) & set(f["validation"])

    card = json.loads((out / "model" / "card.json").read_text())
    store_meta = json.loads((root / "stores" / "t00.zarr" / ".zattrs").read_text())["wsi_hcc"]["features"]
    assert card["features"]["digest"] == store_meta["digest"] and card["features"]["backbone"] == "colour_texture_test"
    assert card["class_names"] == ["non-HCC", "HCC"] and card["grade_names"] == ["G1", "G2", "G3"]
    assert 0 < card["threshold"] <= 1 and card["temperature"] > 0 and card["versions"]["torch"]
    assert len(card["members"]) == 1 and len(card["weights_sha256"]) == 64 and card["format"] == "wsi-hcc-mil-bundle/3"
    assert sorted(card["files"]) == ["backbone.safetensors", "config.yaml"]
    assert card["training_data"]["slides"] == 16 and len(card["training_data"]["labels_sha256"]) == 64
    assert card["backbone"]["name"] == "colour_texture_test" and (out / "model" / "backbone.safetensors").is_file()
    assert card["backbone"]["tiling"]["target_mpp"] == 1.0 and card["backbone"]["tiling"]["tile_px"] == 32

    # loading never unpickles
    def no_pickle(*args, **kwargs):
        raise AssertionError("unpickling")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    bundle = load_mil_bundle(out / "model")
    assert bundle.tile_config()["jpeg_subsampling"] == card["backbone"]["tiling"]["jpeg_subsampling"] == "444"
    # a bundle trained before the tiling recorded its chroma subsampling was trained on 4:2:0 tiles
    older = {k: v for k, v in card["backbone"]["tiling"].items() if k != "jpeg_subsampling"}
    older_bundle = dataclasses.replace(bundle, card=dataclasses.replace(
        bundle.card, backbone=bundle.card.backbone | {"tiling": older}))
    assert older_bundle.tile_config()["jpeg_subsampling"] == "420"
    features = np.asarray(zarr.open_array(str(root / "stores" / "t00.zarr" / "features"), mode="r")[:])
    prediction = bundle.predict(features)
    assert prediction.label in ("non-HCC", "HCC") and prediction.attention.shape == (len(features),)
    assert prediction.grade in ("G1", "G2", "G3") and prediction.grade_probs.shape == (3,)
    assert prediction.tile_label_probs.shape == (len(features), 2)
    assert prediction.tile_grade_probs.shape == (len(features), 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        prediction.label = "HCC"
    backbone = bundle.create_backbone()
    assert backbone.card.weights_sha256 == card["backbone"]["sha256"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        bundle.card.threshold = 0.1
    assert bundle.card.class_names == ("non-HCC", "HCC") and bundle.card.raw["threshold"] == bundle.card.threshold
    # a bundle of the older layout (one file per member) still loads, and predicts the same
    old = load_mil_bundle(_as_legacy_bundle(out / "model", root / "legacy")).predict(features)
    assert old.label == prediction.label and np.allclose(old.label_probs, prediction.label_probs)
    monkeypatch.undo()

    first = (out / "folds" / "fold1" / "result.json").read_bytes()
    again = CliRunner().invoke(train_mil, ["--config", str(config), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "0 folds trained, 3 already done" in again.output
    assert (out / "folds" / "fold1" / "result.json").read_bytes() == first
    (out / "folds" / "fold2" / "result.json").unlink()  # as if killed during fold 2
    third = CliRunner().invoke(train_mil, ["--config", str(config), "--out", str(out)])
    assert "1 fold trained, 2 already done" in third.output, third.output


def test_the_readme_config_trains_on_the_labels_the_demo_writes(tiny_cohort, tmp_path, monkeypatch):
    """`wsi-hcc train-mil --config mil/gated_hcc` (the shipped config, named from another folder) on a CSV
    that says tumour / non_tumour, as `wsi-hcc demo` writes: its class_map gives HCC / non-HCC."""
    from wsi_hcc.cli.mil import train_mil

    root, config = tiny_cohort
    monkeypatch.chdir(tmp_path)
    demo_style = (root / "slides.csv").read_text().replace("non-HCC", "non_tumour").replace(",HCC,", ",tumour,")
    assert "HCC" not in demo_style and demo_style.count(",tumour,") == 8
    Path("slides.csv").write_text(demo_style)
    weights = yaml.safe_load(config.read_text())["mil"]["backbone_weights"]
    result = CliRunner().invoke(train_mil, ["--config", "mil/gated_hcc", str(root / "stores"), "--out", "run",
                                            "--folds", "2", "--epochs", "2", "--bootstrap", "0", "--device", "cpu",
                                            "--backbone-weights", weights])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "run" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["slide"]: r["label"] for r in rows} == {
        f"t{i:02d}": "HCC" if i % 2 == 0 else "non-HCC" for i in range(16)}
    card = json.loads((tmp_path / "run" / "model" / "card.json").read_text())
    assert card["class_names"] == ["non-HCC", "HCC"]
    # classify --labels reads the demo's words through the card's class_map, so true_label matches predicted_label
    assert card["class_map"] == {"non_tumour": "non-HCC", "tumour": "HCC"}
    from wsi_hcc.pipelines.classify import _true_labels

    truth = _true_labels("slides.csv", card["class_map"])
    assert truth["t00"][0] == "HCC" and truth["t01"][0] == "non-HCC"
    # a label neither in class_names nor in class_map: one line with the fix
    Path("slides.csv").write_text(demo_style.replace("non_tumour", "normal"))
    result = CliRunner().invoke(train_mil, ["--config", "mil/gated_hcc", str(root / "stores"), "--out", "run2"])
    assert result.exit_code == 2 and result.output == (
        "error: slides.csv:3: label 'normal' is not one of class_names ['non-HCC', 'HCC']; fix the CSV or map it in "
        "the config (class_map: {normal: non-HCC})\n")


@pytest.mark.parametrize("name", ["clam_mb", "max"])
def test_other_models_run_through_the_pipeline(tiny_cohort, name):
    from wsi_hcc.mil.config import load_mil_config
    from wsi_hcc.pipelines.train_mil import run_mil_training

    root, config = tiny_cohort
    cfg = load_mil_config(config).with_overrides(**{"model.name": name}, epochs=2, bundle="ensemble", bootstrap=0)
    report = run_mil_training(cfg, root / f"run_{name}")
    assert report.folds_run == [0, 1, 2]
    assert len(json.loads((report.bundle_dir / "card.json").read_text())["members"]) == 3
    assert load_mil_bundle(report.bundle_dir).card.selection == "ensemble"


def test_one_line_errors_name_the_file_and_the_fix(tiny_cohort, tmp_path):
    from wsi_hcc.cli.mil import train_mil

    root, config = tiny_cohort
    data = yaml.safe_load(config.read_text())

    def run(mil, **kw):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"mil": mil}))
        return CliRunner().invoke(train_mil, ["--config", str(path), "--out", str(tmp_path / "o")])

    # a store without features
    bare = tmp_path / "bare"
    shutil.copytree(root / "stores", bare)
    shutil.rmtree(bare / "t03.zarr" / "features")
    attrs = json.loads((bare / "t03.zarr" / ".zattrs").read_text())
    del attrs["wsi_hcc"]["features"]
    (bare / "t03.zarr" / ".zattrs").write_text(json.dumps(attrs))
    result = run({**data["mil"], "stores": [str(bare)]})
    assert result.exit_code == 2
    assert "t03.zarr: has no features yet; run `wsi-hcc features" in result.output
    assert len(result.output.strip().splitlines()) == 1

    # a CSV slide without a store
    csv = tmp_path / "labels.csv"
    csv.write_text((root / "slides.csv").read_text() + "ghost,px,HCC,\n")
    result = run({**data["mil"], "labels_csv": str(csv)})
    assert result.exit_code == 2 and "labels.csv:18: slide 'ghost' has no store" in result.output
    assert "wsi-hcc tile" in result.output

    csv.write_text((root / "slides.csv").read_text().replace("non-HCC", "normal"))
    result = run({**data["mil"], "labels_csv": str(csv)})
    assert result.exit_code == 2 and "label 'normal' is not one of class_names" in result.output

    no_weights = {k: v for k, v in data["mil"].items() if k != "backbone_weights"}
    result = run(no_weights)
    assert result.exit_code == 2 and "are not beside the stores; pass --backbone-weights PATH" in result.output
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"not these weights")
    result = run({**no_weights, "backbone_weights": str(other)})
    assert result.exit_code == 2 and "not the weights the features were made with" in result.output

    result = run({**data["mil"], "modle": {}})
    assert result.exit_code == 2 and "modle: unknown setting" in result.output
    result = run({**data["mil"], "class_map": {"tumour": "cancer"}})
    assert result.exit_code == 2 and "class_map maps to ['cancer'], which are not in class_names" in result.output

    result = CliRunner().invoke(train_mil, ["--help"])
    assert result.exit_code == 0 and "Examples:" in result.output and "wsi-hcc train-mil --config" in result.output


def test_a_saved_descriptor_card_builds_its_backbone_without_touching_the_registry():
    """Loading a model never changes global state: a bundle's colour/texture backbone is built from
    its card by an unregistered entry."""
    from wsi_hcc.mil.handcrafted import entry_for_card
    from wsi_hcc.models import create_backbone, list_backbones

    before = list_backbones()
    card = {"architecture": "colour_texture_saved", "target_mpp": 1.0, "tile_px": 32}
    model = create_backbone("colour_texture_saved", num_classes=0, entry=entry_for_card(card))
    assert model.card.architecture == "colour_texture_saved" and model.card.feature_dim == 15
    assert list_backbones() == before and "colour_texture_saved" not in before
    assert entry_for_card({"architecture": "resnet34", "target_mpp": 0.5, "tile_px": 224}) is None


def test_a_missing_bundle_folder_says_so(tmp_path):
    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.mil import load_mil_bundle

    with pytest.raises(WsiHccError, match="nomodel: no such folder; point --model at a model folder: OUT/model of "
                                          "wsi-hcc train-mil"):
        load_mil_bundle(tmp_path / "nomodel")
