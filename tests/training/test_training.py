"""Patch training: config, data and splits, sampling, metrics, checkpoints and resume, early stopping, CLI."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import RecordingProgress
from PIL import Image

from wsi_hcc.cli.app import main
from wsi_hcc.errors import ConfigError, WsiHccError
from wsi_hcc.models import create_backbone
from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.pipelines.train_patches import run_training
from wsi_hcc.stain.augment import reseed_augmentation
from wsi_hcc.store.patch_store import open_store
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.training.checkpoint import TrainState
from wsi_hcc.training.config import TrainConfig, load_train_config
from wsi_hcc.training.data import EpochItems, class_loss_weights, epoch_order, load_training_data
from wsi_hcc.training.errors import TrainError, worker_error_line
from wsi_hcc.training.loop import Trainer, lr_at
from wsi_hcc.training.metrics import classification_metrics, confusion_png, curves_png
from wsi_hcc.training.stopping import record_epoch, should_stop
from wsi_hcc.training.synth_labels import mask_geojson, write_mask_geojson

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
REPO = CONFIGS.parent


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Four small synthetic slides (two patients each with two) tiled at 1 um/px, 32 px, lossless.

    Also a fifth store at another resolution, QuPath GeoJSON of the ground truth, and a slide CSV.
    """
    from wsi_hcc.synth import write_synthetic_slide

    root = tmp_path_factory.mktemp("tiny")
    slides = []
    for i in range(4):
        slide = write_synthetic_slide(root / "slides" / f"t{i}.svs", size_px=(1024, 768), mpp=0.5, seed=i)
        write_mask_geojson(slide.mask_path, root / "ann" / f"t{i}.geojson")
        slides.append(slide.path)
    report = run_tile(slides, root / "stores", TileConfig(target_mpp=1.0, tile_px=32, qc=False, compression="none"))
    assert report.count("done") == 4
    run_tile(slides[:1], root / "other", TileConfig(target_mpp=0.5, tile_px=32, qc=False, compression="none"))
    csv_path = root / "slides.csv"
    csv_path.write_text("slide,patient,label,grade\nt0,pA,HCC,2\nt1,pA,HCC,3\nt2,pB,non-HCC,\nt3,pC,non-HCC,\n")
    return root


def _config(tiny: Path, **overrides) -> TrainConfig:
    data = {
        "backbone": "test_resnet", "class_names": ["non_tumour", "tumour"], "input_px": 32,
        "stores": [str(tiny / "stores")],
        "labels": {"annotations": str(tiny / "ann"), "slide_csv": str(tiny / "split.csv")},
        "batch_size": 16, "epochs": 2, "optimizer": {"name": "adam", "lr": 1e-3},
        "max_tiles_per_slide": 24, "early_stopping": {"metric": "val_loss"}, "checkpoint_minutes": 10,
        "device": "cpu",  # bit-exact resume checks; CUDA has its own test
    }
    (tiny / "split.csv").write_text("slide,patient,split\nt0,p0,train\nt1,p1,train\nt2,p2,validation\nt3,p3,test\n")
    for key, value in overrides.items():
        target = data
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return TrainConfig.model_validate(data)


def _write_yaml(path: Path, train: dict) -> Path:
    path.write_text(yaml.safe_dump({"train": train}))
    return path


# -- config -----------------------------------------------------------------------------------------


def test_shipped_configs_validate_and_follow_their_recipes():
    resnet = load_train_config(CONFIGS / "train" / "resnet34_hcc.yaml")
    assert resnet.backbone == "resnet34" and resnet.class_names == ["non-HCC", "HCC"]
    assert (REPO / resnet.augmentation).is_file() and resnet.augmentation.endswith("chen2022.yaml")
    livernet = load_train_config(CONFIGS / "train" / "livernet_grading.yaml")
    assert livernet.backbone == "livernet" and len(livernet.class_names) == 4 and livernet.labels.column == "grade"
    assert (livernet.optimizer.name, livernet.optimizer.lr, livernet.batch_size,
            livernet.epochs) == ("adam", 1e-3, 4, 40)
    assert livernet.flip_copies and livernet.early_stopping.patience is None
    # Keras: lr if epoch < 10 else lr * exp(-0.1), applied to the previous epoch's lr
    keras, lr = [], 1e-3
    for epoch in range(40):
        lr = lr if epoch < 10 else lr * math.exp(-0.1)
        keras.append(lr)
    ours = [lr_at(livernet.optimizer, livernet.schedule, e) for e in range(40)]
    np.testing.assert_allclose(ours, keras, rtol=1e-12)
    assert ours[9] == 1e-3 and ours[10] == pytest.approx(1e-3 * math.exp(-0.1))


@pytest.mark.parametrize("train, expected", [
    ({"backbone": "resnet34", "stores": ["s"], "labels": {"slide_csv": "x.csv"}, "batchsize": 4},
     "batchsize: unknown setting"),
    ({"backbone": "resnet34", "labels": {"slide_csv": "x.csv"}}, "stores: required setting is missing"),
    ({"backbone": "resnet34", "stores": ["s"], "labels": {"slide_csv": "x.csv"}, "optimizer": {"lr": -1}},
     "optimizer.lr: Input should be greater than 0"),
    ({"backbone": "resnet34", "stores": ["s"], "labels": {}}, "labels: give labels.slide_csv"),
    ({"backbone": "resnet34", "stores": ["s"], "labels": {"slide_csv": "x.csv"},
      "split": {"fractions": [0.5, 0.5, 0.5]}},
     "split: fractions [0.5, 0.5, 0.5] must be non-negative and sum to 1"),
    ({"backbone": "resnet34", "stores": ["s"], "class_names": ["a", "b"],
      "labels": {"annotations": "ann", "class_map": {"Tumor": "c"}}}, "class_map maps to ['c']"),
    ({"backbone": "resnet34", "stores": ["s"], "labels": {"slide_csv": "x.csv"}, "augmentation": [{"Sharpenify": {}}]},
     "unknown transform 'Sharpenify'"),
    ({"backbone": "resnet34", "stores": ["s"], "labels": {"slide_csv": "x.csv"}, "early_stopping": {"metric": "auc"}},
     "early_stopping.metric:"),
])
def test_config_errors_are_one_line_naming_the_file(tmp_path, train, expected):
    path = _write_yaml(tmp_path / "bad.yaml", train)
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_config_file_problems_are_one_line(tmp_path):
    cases = {tmp_path / "missing.yaml": "training config not found", tmp_path: "is a folder"}
    (tmp_path / "broken.yaml").write_text("train: [unclosed\n")
    cases[tmp_path / "broken.yaml"] = "not valid YAML"
    (tmp_path / "tile.yaml").write_text("tile: {tile_px: 256}\n")
    cases[tmp_path / "tile.yaml"] = "expected a top-level 'train:' mapping"
    for path, expected in cases.items():
        with pytest.raises(ConfigError) as err:
            load_train_config(path)
        assert str(err.value).startswith(str(path)) and expected in str(err.value) and "\n" not in str(err.value)


def test_overrides_reach_nested_settings_and_are_validated(tiny):
    config = _config(tiny)
    changed = config.with_overrides(epochs=7, **{"optimizer.lr": 0.5, "early_stopping.patience": 2}, seed=None)
    assert (changed.epochs, changed.optimizer.lr, changed.early_stopping.patience, changed.seed) == (7, 0.5, 2, 0)
    with pytest.raises(ConfigError, match=r"^command-line options: batch_size: "):
        config.with_overrides(batch_size=0)
    # how long and where a run goes do not change what it resumes; what it learns does
    assert config.with_overrides(epochs=9, device="cpu", num_workers=2).resume_digest() == config.resume_digest()
    assert config.with_overrides(**{"optimizer.lr": 0.1}).resume_digest() != config.resume_digest()


# -- data -------------------------------------------------------------------------------------------


def test_slide_csv_labels_patient_splits_and_left_out_slides(tiny, tmp_path):
    config = _config(tiny, labels={"slide_csv": str(tiny / "slides.csv")}, class_names=["non-HCC", "HCC"],
                     **{"split.fractions": [0.5, 0.25, 0.25], "split.seed": 0}, max_tiles_per_slide=None)
    data = load_training_data(config)
    assert data.class_names == ("non-HCC", "HCC") and (data.target_mpp, data.tile_px) == (1.0, 32)
    by_stem = {s.stem: s for s in data.slides}
    assert set(by_stem) == {"t0", "t1", "t2", "t3"}
    assert (by_stem["t0"].labels == 1).all() and (by_stem["t2"].labels == 0).all()
    side = {stem: split for split, stems in data.splits.items() for stem in stems}
    assert side["t0"] == side["t1"]  # one patient, one side
    record = data.record()
    assert sorted(s for v in record["splits"].values() for s in v["slides"]) == ["t0", "t1", "t2", "t3"]
    # grades as classes; a slide without a grade is an error naming the CSV row
    with pytest.raises(TrainError, match=r"slides.csv:4: slide 't2' has no grade"):
        load_training_data(config.with_overrides(**{"labels.column": "grade"}, class_names=["2", "3"]))
    # a label outside class_names names the row and both fixes
    with pytest.raises(TrainError, match=r"slides.csv:2: label 'HCC' is not one of class_names \['a', 'b'\]"):
        load_training_data(config.with_overrides(class_names=["a", "b"]))
    # labels.class_map maps the CSV's own words (as wsi-hcc demo writes them) to the classes
    demo_style = tmp_path / "demo_style.csv"
    demo_style.write_text((tiny / "slides.csv").read_text().replace("non-HCC", "non_tumour")
                          .replace(",HCC,", ",tumour,"))
    mapped = load_training_data(config.with_overrides(**{"labels.slide_csv": str(demo_style), "labels.class_map": {
        "tumour": "HCC", "non_tumour": "non-HCC"}}))
    assert mapped.class_names == data.class_names and mapped.splits == data.splits
    assert all((m.labels == s.labels).all() for m, s in zip(mapped.slides, data.slides))
    # slides without a store and stores without a row are left out, and said so
    partial = tmp_path / "partial.csv"
    partial.write_text("slide,patient,label,split\nt0,p0,HCC,train\nt2,p2,non-HCC,train\nt3,p3,non-HCC,validation\n"
                       "t9,p9,HCC,test\n")
    data = load_training_data(config.with_overrides(**{"labels.slide_csv": str(partial)}))
    reasons = {d["slide"]: d["reason"] for d in data.left_out}
    assert reasons["t9"] == "in the slide CSV but no store" and reasons["t1"].startswith("not in")


def test_annotation_labels_follow_the_ground_truth_mask(tiny):
    config = _config(tiny, max_tiles_per_slide=None, **{"labels.class_map": {}})
    data = load_training_data(config)
    slide = next(s for s in data.slides if s.stem == "t0")
    mask = np.asarray(Image.open(tiny / "slides" / "t0.mask.png"))
    coords = open_store(slide.store)["coords"][:]
    for (x, y), label in zip(coords, slide.labels):
        if label < 0:
            continue
        block = mask[y // 32:(y + 64) // 32, x // 32:(x + 64) // 32]  # a 64 px tile is 2x2 mask pixels
        assert (block == label + 1).sum() >= 2  # its class covers at least half of it
    assert {int(v) for v in slide.labels if v >= 0} == {0, 1}
    # QuPath names map onto class names
    renamed = tiny / "renamed"
    renamed.mkdir(exist_ok=True)
    for path in (tiny / "ann").glob("*.geojson"):
        text = path.read_text().replace('"tumour"', '"Tumor"').replace('"non_tumour"', '"Other"')
        (renamed / path.name).write_text(text)
    mapped = load_training_data(config.with_overrides(**{"labels.annotations": str(renamed),
                                                         "labels.class_map": {"Tumor": "tumour",
                                                                              "Other": "non_tumour"}}))
    np.testing.assert_array_equal(next(s for s in mapped.slides if s.stem == "t0").labels, slide.labels)


def test_mask_geojson_is_the_union_of_mask_pixels():
    import shapely
    from shapely.geometry import shape

    mask = np.array([[0, 1, 1], [2, 2, 1], [0, 0, 2]], dtype=np.uint8)
    features = mask_geojson(mask, 10)["features"]
    areas = {f["properties"]["classification"]["name"]: shape(f["geometry"]).area for f in features}
    assert areas == {"non_tumour": 300.0, "tumour": 300.0}
    tumour = shape(next(f for f in features if f["properties"]["classification"]["name"] == "tumour")["geometry"])
    assert tumour.contains(shapely.Point(5, 15)) and tumour.contains(shapely.Point(25, 25))
    assert not tumour.contains(shapely.Point(25, 5))


def test_split_column_fixes_the_split_and_bad_data_is_one_line(tiny, tmp_path):
    data = load_training_data(_config(tiny))
    assert data.splits == {"train": ["t0", "t1"], "validation": ["t2"], "test": ["t3"]}
    index = data.split_index("train")
    dataset = data.dataset("train")
    assert len(dataset) == len(index.tile_of) == 48  # max_tiles_per_slide 24
    for position in (0, 30, 47):
        item = dataset[position]
        assert item["index"] == index.tile_of[position] and item["slide"] == index.stems[index.store_of[position]]
        assert item["coords"] == tuple(index.coords[position]) and item["label"] == index.labels[position]
    conflict = tmp_path / "conflict.csv"
    conflict.write_text("slide,patient,split\nt0,p0,train\nt1,p0,test\nt2,p2,validation\nt3,p3,test\n")
    with pytest.raises(TrainError, match="patient 'p0' is in both train and test"):
        load_training_data(_config(tiny).with_overrides(**{"labels.slide_csv": str(conflict)}))
    with pytest.raises(WsiHccError, match=r"nope: store or folder not found; check the path \(or 'stores'"):
        load_training_data(_config(tiny, stores=[str(tiny / "nope")]))
    with pytest.raises(TrainError, match=r"t0.zarr: tiles are at 0.5 um/px but .* re-tile"):
        load_training_data(_config(tiny, stores=[str(tiny / "stores" / "t1.zarr"), str(tiny / "other" / "t0.zarr")]))
    not_a_store = tmp_path / "x.zarr"
    not_a_store.mkdir()
    with pytest.raises(WsiHccError, match="not a patch store"):
        load_training_data(_config(tiny, stores=[str(not_a_store)]))
    one_patient = tmp_path / "one.csv"
    one_patient.write_text("slide,patient\nt0,p\nt1,p\nt2,p\nt3,p\n")
    with pytest.raises(TrainError, match="the validation split is empty"):
        load_training_data(_config(tiny).with_overrides(**{"labels.slide_csv": str(one_patient)}))


# -- sampling and augmentation ----------------------------------------------------------------------


def test_epoch_order_is_seeded_and_the_sampler_balances_classes():
    labels = np.array([0] * 90 + [1] * 10)
    first = epoch_order(labels, seed=1, epoch=0, balanced=False)
    assert sorted(first) == list(range(100))
    np.testing.assert_array_equal(first, epoch_order(labels, seed=1, epoch=0, balanced=False))
    assert not np.array_equal(first, epoch_order(labels, seed=1, epoch=1, balanced=False))
    drawn = np.concatenate([epoch_order(labels, seed=0, epoch=e, balanced=True) for e in range(20)])
    assert abs((labels[drawn] == 1).mean() - 0.5) < 0.05  # 10% of tiles, half of the draws
    np.testing.assert_allclose(class_loss_weights(np.array([0, 0, 0, 1, -1]), 3), [2 / 3, 2.0, 0.0])


def test_augmentation_draws_are_independent_per_transform_and_reproducible():
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=0)
    outcomes = set()
    for seed in range(64):
        reseed_augmentation(pipeline, seed)
        out = pipeline(image=image)["image"]
        outcomes.add((np.array_equal(out, image[:, ::-1]) or np.array_equal(out, image[::-1, ::-1]),
                      np.array_equal(out, image[::-1]) or np.array_equal(out, image[::-1, ::-1])))
        reseed_augmentation(pipeline, seed)
        np.testing.assert_array_equal(out, pipeline(image=image)["image"])
    assert outcomes == {(False, False), (True, False), (False, True), (True, True)}


def test_flip_copies_are_the_release_flips(tiny):
    dataset = load_training_data(_config(tiny)).dataset("train")
    items = EpochItems(dataset, np.array([0, 1, 2]), copies=3)
    tile = dataset[0]["image"]
    np.testing.assert_array_equal(items[0][0], tile)
    np.testing.assert_array_equal(items[1][0], tile[::-1])       # cv2.flip(img, 0)
    np.testing.assert_array_equal(items[2][0], tile[:, ::-1])    # cv2.flip(img, 1)
    assert [items[k][2] for k in range(3)] == [0, 0, 0]


def test_worker_errors_come_back_as_their_own_line():
    wrapped = RuntimeError("Caught TrainError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                           "last):\n  File \"x.py\", line 1\nwsi_hcc.training.errors.TrainError: a.zarr: tile 3 cannot "
                           "be read (bad); re-tile the slide")
    assert worker_error_line(wrapped) == "a.zarr: tile 3 cannot be read (bad); re-tile the slide"
    assert worker_error_line(TrainError("plain")) == "plain"


# -- metrics ----------------------------------------------------------------------------------------


def test_binary_metrics_match_hand_computation():
    labels = [0, 0, 0, 1, 1]
    p1 = np.array([0.1, 0.6, 0.3, 0.8, 0.4])
    m = classification_metrics(labels, np.stack([1 - p1, p1], axis=1), ["normal", "tumour"])
    # predicted: 0 1 0 1 0 -> TN=2 FP=1 FN=1 TP=1
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # AUC: positive scores {0.8, 0.4} vs negatives {0.1, 0.6, 0.3}: pairs won 3 + 2 of 6
    assert m["roc_auc"] == pytest.approx(5 / 6)
    tumour = m["per_class"]["tumour"]
    assert (tumour["precision"], tumour["recall"], tumour["support"]) == (0.5, 0.5, 2)
    assert tumour["f1"] == pytest.approx(0.5)
    assert m["per_class"]["normal"]["precision"] == pytest.approx(2 / 3)


def test_multiclass_auc_is_one_vs_rest_macro_and_undefined_without_a_class():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    probs = rng.dirichlet([1, 1, 1], size=30) + np.eye(3)[labels] * 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    m = classification_metrics(labels, probs, ["a", "b", "c"])
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    missing = classification_metrics([0, 0, 1], np.eye(3)[[0, 1, 1]], ["a", "b", "c"])
    assert missing["roc_auc"] is None and "lacks" in missing["roc_auc_note"]
    assert missing["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # classes present only
    assert missing["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "roc_auc": None}
    assert classification_metrics([], np.zeros((0, 2)), ["a", "b"])["accuracy"] is None


def test_pictures_are_pngs():
    confusion = Image.open(__import__("io").BytesIO(confusion_png({"validation": [[5, 1], [2, 7]],
                                                                   "test": [[3, 0], [0, 4]]}, ["a", "b"])))
    assert confusion.format == "PNG" and confusion.width > confusion.height
    history = [{"epoch": e, "lr": 1e-3, "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_accuracy": 0.5,
                "val_balanced_accuracy": 0.5, "val_auc": None if e == 0 else 0.7} for e in range(3)]
    curves = Image.open(__import__("io").BytesIO(curves_png(history, "val_loss", best_epoch=2)))
    assert curves.format == "PNG" and curves.size == (1200, 360)


def test_best_epoch_and_early_stopping_rules():
    state = TrainState(config_digest="x")
    for epoch, loss in enumerate([1.0, 0.8, 0.85, 0.79, 0.9, 0.95]):
        record_epoch(state, epoch, loss, "val_loss", min_delta=0.02)
    assert (state.best_epoch, state.best_value, state.bad_epochs) == (1, 0.8, 4)  # 0.79 is not 0.02 better
    assert should_stop(state, 4) and not should_stop(state, 5) and not should_stop(state, None)
    auc = TrainState(config_digest="x")
    for epoch, value in enumerate([0.6, None, 0.7, 0.65]):
        record_epoch(auc, epoch, value, "val_auc")
    assert (auc.best_epoch, auc.bad_epochs) == (2, 1)


# -- training runs ----------------------------------------------------------------------------------


class _StopAfter(RecordingProgress):
    """Progress that interrupts the run after ``n`` training batches, like a kill."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def steps_done(self, n=1, status=""):
        super().steps_done(n, status)
        if status.startswith("loss"):  # a training batch (evaluation steps carry no loss)
            self.n -= 1
            if self.n == 0:
                raise KeyboardInterrupt


@pytest.fixture(scope="module")
def straight_run(tiny, tmp_path_factory):
    """An uninterrupted 2-epoch run with augmentation, class weights and a balanced sampler."""
    out = tmp_path_factory.mktemp("straight")
    config = _config(tiny, augmentation=[{"HorizontalFlip": {"p": 0.5}}, {"RandomRotate90": {"p": 0.5}}],
                     **{"class_weighting.loss": "balanced", "class_weighting.sampler": True})
    return config, run_training(config, out)


def test_a_run_writes_every_output_with_provenance(straight_run, tmp_path):
    config, report = straight_run
    out = report.out_dir
    for name in ("best.safetensors", "last-checkpoint.pt", "metrics.json", "predictions.csv", "confusion.png",
                 "curves.png", "splits.json", "run-manifest.json"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".*partial"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert report.status == "done" and metrics["epochs_run"] == 2 and len(metrics["history"]) == 2
    assert set(metrics["splits"]) == {"validation", "test"}
    test = metrics["splits"]["test"]
    assert {"accuracy", "balanced_accuracy", "roc_auc", "per_class", "confusion_matrix", "loss"} <= set(test)
    assert test["n_tiles"] == 24 and sum(map(sum, test["confusion_matrix"])) == 24
    provenance = metrics["provenance"]
    assert (provenance["config_digest"] == config.resume_digest()
            and provenance["versions"]["torch"] == __import__("importlib.metadata").metadata.version("torch"))
    assert {s["stem"] for s in provenance["stores"]} == {"t0", "t1", "t2", "t3"}
    assert all(s["slide_fingerprint"].startswith("sha256:") for s in provenance["stores"])
    assert provenance["class_loss_weights"] is not None
    manifest = json.loads((out / "run-manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["best_weights_sha256"] == provenance["best_weights_sha256"]
    assert json.loads((out / "splits.json").read_text())["splits"]["test"]["slides"] == ["t3"]
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "split,slide,tile,x,y,label,predicted,p_non_tumour,p_tumour" and len(rows) == 1 + 24 + 24
    # the best weights carry a card for inference on these stores
    model = create_backbone("test_resnet", weights=out / "best.safetensors")
    card = model.card
    assert (card.class_names == ("non_tumour", "tumour")
            and (card.target_mpp, card.tile_px, card.input_px) == (1.0, 32, 32))
    assert card.extra["training"]["best_epoch"] == metrics["best_epoch"]
    assert card.weights_sha256 == provenance["best_weights_sha256"]
    # ... and so does the model folder, the one format every wsi-hcc model is saved in
    folder = json.loads((out / "model" / "card.json").read_text())
    assert folder["format"] == "wsi-hcc-patch-model/1" and folder["kind"] == "patch-classifier"
    assert folder["training"]["slides"] == 4 and folder["training"]["metrics"]["test"]["n_tiles"] == 24
    assert folder["training"]["kind"] == "synthetic" and folder["training"]["synthetic_slides"] == 4
    from_folder = create_backbone("test_resnet", weights=out / "model")
    assert from_folder.card.class_names == card.class_names and from_folder.card.extra == card.extra
    assert from_folder.card.weights_sha256 == folder["weights_sha256"]
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(from_folder.eval()(x), model.eval()(x))
    damaged = shutil.copytree(out / "model", tmp_path / "model")
    (damaged / "weights.safetensors").write_bytes(b"changed")
    with pytest.raises(WsiHccError, match="checksum differs from card.json"):
        create_backbone("test_resnet", weights=damaged)
    (damaged / "weights.safetensors").unlink()
    with pytest.raises(WsiHccError, match="not a patch model folder \\(weights.safetensors missing\\)"):
        create_backbone("test_resnet", weights=damaged)


def test_checkpoints_load_with_weights_only(straight_run):
    _, report = straight_run
    payload = torch.load(report.out_dir / "last-checkpoint.pt", map_location="cpu", weights_only=True)
    assert payload["state"]["epoch"] == 2 and payload["state"]["done"] is True
    assert {"model", "optimizer", "scaler", "rng"} <= set(payload)


def test_a_killed_run_resumes_mid_epoch_to_the_same_result(tiny, straight_run, tmp_path):
    config, report = straight_run
    out = tmp_path / "killed"
    killed = config.with_overrides(checkpoint_minutes=0)  # checkpoint after every batch
    with pytest.raises(KeyboardInterrupt):
        run_training(killed, out, progress=_StopAfter(5))  # 3 batches per epoch: dies in epoch 2
    state = torch.load(out / "last-checkpoint.pt", weights_only=True)["state"]
    assert (state["epoch"], state["batch"]) == (1, 1)
    resumed = run_training(killed, out)
    assert resumed.resumed_from == {"epoch": 1, "batch": 1}
    straight = torch.load(report.out_dir / "last-checkpoint.pt", weights_only=True)["model"]
    again = torch.load(out / "last-checkpoint.pt", weights_only=True)["model"]
    for key in straight:
        torch.testing.assert_close(again[key], straight[key], rtol=0, atol=0)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in report.metrics["history"]]
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.metrics["history"]] == strip
    # a finished run is not redone
    assert run_training(killed, out).status == "already done"


def test_more_epochs_continue_a_finished_run_and_other_settings_need_restart(tiny, tmp_path):
    out = tmp_path / "grow"
    one = run_training(_config(tiny, epochs=1), out)
    assert one.epochs_run == 1
    two = run_training(_config(tiny, epochs=2), out)
    assert two.resumed_from == {"epoch": 1, "batch": 0} and two.epochs_run == 2 and len(two.metrics["history"]) == 2
    with pytest.raises(TrainError, match=r"last-checkpoint.pt: from a run with other settings .* pass --restart"):
        run_training(_config(tiny, epochs=2, **{"optimizer.lr": 0.01}), out)
    fresh = run_training(_config(tiny, epochs=1, **{"optimizer.lr": 0.01}), out, restart=True)
    assert fresh.resumed_from is None and fresh.epochs_run == 1


def test_early_stopping_stops_and_keeps_the_best_epoch(tiny, tmp_path):
    # nothing counts as an improvement after the first epoch, so patience 1 stops after epoch 2
    config = _config(tiny, epochs=6, early_stopping={"metric": "val_loss", "patience": 1, "min_delta": 100.0})
    report = run_training(config, tmp_path / "early")
    assert report.epochs_run == 2 and report.best_epoch == 0 and report.stop_reason.startswith("early stopping")
    assert json.loads((tmp_path / "early" / "metrics.json").read_text())["best_epoch"] == 0


def test_setup_errors_are_one_line(tiny, tmp_path):
    with pytest.raises(WsiHccError, match="unknown backbone 'nonet'"):
        run_training(_config(tiny, backbone="nonet"), tmp_path / "a")
    with pytest.raises(WsiHccError, match=r"missing.pt: weights file not found"):
        run_training(_config(tiny, weights=str(tmp_path / "missing.pt")), tmp_path / "b")
    if not torch.cuda.is_available():
        with pytest.raises(WsiHccError, match="no CUDA device is available here"):
            run_training(_config(tiny, device="cuda"), tmp_path / "c")
    with pytest.raises(TrainError, match="validation split lacks some classes"):
        run_training(_config(tiny, stores=[str(tiny / "stores" / f"t{i}.zarr") for i in range(4)],
                             labels={"slide_csv": str(tiny / "slides.csv")}, class_names=["non-HCC", "HCC"],
                             early_stopping={"metric": "val_auc"}, **{"split.fractions": [0.5, 0.25, 0.25]}),
                     tmp_path / "d")


def test_cpu_trainer_runs_without_amp(tiny):
    model = create_backbone("test_resnet", num_classes=2)
    model.card = model.card.with_classes(2)
    trainer = Trainer(model, model.card, torch.optim.SGD(model.parameters(), lr=0.1), "cpu", amp=True)
    assert trainer.amp is False and trainer.scaler is None
    loss = trainer.step(torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8), torch.tensor([0, 1, 0, 1]))
    assert math.isfinite(loss)


def test_an_unreadable_tile_is_one_line_even_from_a_worker_process(tiny, tmp_path):
    import shutil

    stores = tmp_path / "stores"
    for i in range(4):
        shutil.copytree(tiny / "stores" / f"t{i}.zarr", stores / f"t{i}.zarr")
    for chunk in (stores / "t0.zarr" / "tiles").glob("*.0.0.0"):
        chunk.write_bytes(chunk.read_bytes()[:100])  # truncated on disk
    labels = tmp_path / "labels.csv"
    labels.write_text("slide,patient,label,split\nt0,p0,HCC,train\nt1,p1,HCC,validation\nt2,p2,non-HCC,train\n"
                      "t3,p3,non-HCC,validation\n")
    config = _config(tiny, stores=[str(stores)], labels={"slide_csv": str(labels)}, class_names=["non-HCC", "HCC"],
                     max_tiles_per_slide=None, num_workers=1)
    with pytest.raises(TrainError) as err:
        run_training(config, tmp_path / "out")
    message = str(err.value)
    assert message.startswith(f"{stores / 't0.zarr'}: tile ") and " cannot be read (" in message
    assert message.endswith("; re-tile the slide") and "\n" not in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_amp_trains_checkpoints_the_scaler_and_resumes(tiny, tmp_path):
    from wsi_hcc.pipelines.train_patches import run_explain

    config = _config(tiny, device="cuda", amp=True, checkpoint_minutes=0, num_workers=2)
    out = tmp_path / "cuda"
    with pytest.raises(KeyboardInterrupt):
        run_training(config, out, progress=_StopAfter(4))  # 3 batches per epoch: dies in epoch 2, batch 1
    payload = torch.load(out / "last-checkpoint.pt", weights_only=True)
    assert payload["scaler"]["scale"] > 0 and "cuda" in payload["rng"]
    assert (payload["state"]["epoch"], payload["state"]["batch"]) == (1, 0)
    report = run_training(config, out)
    assert report.resumed_from == {"epoch": 1, "batch": 0} and report.epochs_run == 2
    assert all(math.isfinite(h["train_loss"]) and math.isfinite(h["val_loss"]) for h in report.metrics["history"])
    provenance = report.metrics["provenance"]
    assert provenance["amp"] is True and provenance["device"].startswith("cuda")
    explained = run_explain(tiny / "stores" / "t0.zarr", out / "best.safetensors", tmp_path / "cams", tiles=[0, 1],
                            device="cuda")
    assert len(explained.pictures) == 2


# -- command line -----------------------------------------------------------------------------------


def test_cli_trains_and_reports_one_line_errors(tiny, tmp_path):
    runner = CliRunner()
    help_text = runner.invoke(main, ["train-patches", "--help"]).output
    assert "Examples:" in help_text and "wsi-hcc train-patches --config configs/train/resnet34_hcc.yaml" in help_text
    config = _config(tiny, epochs=1)
    path = _write_yaml(tmp_path / "run.yaml", config.model_dump(mode="json"))
    ok = runner.invoke(main, ["train-patches", "--config", str(path), "--out", str(tmp_path / "out"), "--epochs", "1",
                              "--lr", "0.002", "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert "1 epoch (" in ok.output and "ROC AUC" in ok.output
    assert json.loads(
        (tmp_path / "out" / "metrics.json").read_text())["provenance"]["config"]["optimizer"]["lr"] == 0.002
    again = runner.invoke(main, ["train-patches", "--config", str(path), "--out", str(tmp_path / "out"),
                                 "--lr", "0.002"])
    assert again.exit_code == 0 and again.output.startswith("already trained")
    for args, expected in (
        (["--config", str(tmp_path / "nope.yaml")], "nope.yaml: training config not found"),
        (["--config", str(path), str(tmp_path / "gone")], "gone: store or folder not found"),
        (["--config", str(path), "--batch-size", "0"], "Invalid value for '--batch-size'"),
    ):
        result = runner.invoke(main, ["train-patches", *args, "--out", str(tmp_path / "x")])
        assert result.exit_code == 2, result.output
        assert expected in result.output and "Traceback" not in result.output
        if expected.endswith("found"):
            assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow  # about 20 s on 2 shared cores; tests/utils/test_shipped_configs.py checks the lookups fast
def test_shipped_config_trains_from_another_folder_and_a_class_missing_from_validation_has_a_flag(
        tiny, tmp_path, monkeypatch):
    """`--config configs/train/resnet34_hcc.yaml` and `--config train/resnet34_hcc` work outside the
    repository: the augmentation file is found next to the config; data paths stay relative to the folder."""
    from wsi_hcc.pipelines.train_patches import default_loader_workers

    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    # fixed splits: the validation split holds HCC only
    (work / "labels.csv").write_text("slide,patient,label,split\nt0,p0,HCC,train\nt1,p1,HCC,validation\n"
                                     "t2,p2,non-HCC,train\nt3,p3,non-HCC,test\n")
    quick = [str(tiny / "stores"), "--arch", "test_resnet", "--epochs", "1", "--max-tiles-per-slide", "4",
             "--device", "cpu"]
    runner = CliRunner()
    lacking = runner.invoke(main, ["train-patches", "--config", "configs/train/resnet34_hcc.yaml", "--out", "run",
                                   *quick])
    assert lacking.exit_code == 2
    assert lacking.output == ("error: labels.csv: the validation split lacks some classes, so its ROC AUC is "
                              "undefined; pass --monitor val_loss, or --split-seed N for another split\n")
    # the path form got as far as the data above; the named form trains
    result = runner.invoke(main, ["train-patches", "--config", "train/resnet34_hcc", "--out", "run", *quick,
                                  "--monitor", "val_loss"])
    assert result.exit_code == 0, result.output
    assert "\n1 epoch (reached the configured epochs); best epoch 1" in result.output
    manifest = json.loads((work / "run" / "run-manifest.json").read_text())
    augmentation = Path(manifest["config"]["augmentation"])
    assert augmentation.is_absolute() and augmentation == (CONFIGS / "augment" / "chen2022.yaml").resolve()
    assert manifest["config"]["early_stopping"]["metric"] == "val_loss"
    assert Path(manifest["config_file"]) == CONFIGS / "train" / "resnet34_hcc.yaml"
    assert manifest["config"]["num_workers"] is None
    assert manifest["loader_workers"] == default_loader_workers(torch.device("cpu"))


def test_loader_workers_default_from_the_cpu_count_and_the_device():
    from wsi_hcc.cli.train import MONITOR_METRICS
    from wsi_hcc.pipelines.train_patches import default_loader_workers
    from wsi_hcc.training.config import MONITOR_MODES

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [default_loader_workers(cpu, n) for n in (1, 2, 4, 8, 16, 64)] == [0, 0, 0, 2, 4, 4]
    assert [default_loader_workers(cuda, n) for n in (1, 2, 4, 16)] == [0, 1, 3, 8]
    assert default_loader_workers(cpu) <= (os.cpu_count() or 1)  # this machine: never above torch's suggestion
    for name in ("resnet34_hcc", "livernet_grading"):
        assert load_train_config(CONFIGS / "train" / f"{name}.yaml").num_workers is None
    assert MONITOR_METRICS == tuple(MONITOR_MODES)
