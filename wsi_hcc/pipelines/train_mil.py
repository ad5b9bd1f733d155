"""Attention-MIL training with patient-level cross-validation: ``wsi-hcc train-mil``.

A run writes into one folder::

    splits.json            the folds (patients never cross folds), per fold train/validation/test
    folds/fold<k>/         result.json (the done-marker: history, best epoch, validation and test
                           logits, temperature, threshold, seconds), weights.safetensors,
                           attention.npz (per test slide, the attention of every tile, row-aligned
                           with the store's coords)
    metrics.json           per fold and pooled: ROC AUC with bootstrap 95% CI, balanced accuracy,
                           sensitivity/specificity at the threshold, confusion matrix, ECE, and for
                           grades quadratic-weighted kappa
    predictions.csv        one row per slide, from the fold where it was the test set
    roc.png, reliability.png, confusion.png (and grade_confusion.png)
    model/                 the bundle (``wsi_hcc.mil.bundle``)
    run-manifest.json      config, versions, stores with their feature provenance, timings

Every file is written under a temporary name and renamed; the bundle folder is published whole. A
rerun skips folds whose result matches the config and redoes only the rest (a fold interrupted
mid-way starts over: folds are minutes, not hours).

Honesty rules: the threshold and the temperature of a fold are fitted on its validation patients
only; test patients are used once, for the reported numbers; the bundle's fold is chosen by
validation loss, never by test metrics.
"""

from __future__ import annotations

import copy
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.mil.bundle import bundle_backbone, save_member, save_mil_bundle
from wsi_hcc.mil.config import MilConfig
from wsi_hcc.mil.cv import patient_folds, split_validation
from wsi_hcc.mil.metrics import (
    binary_metrics,
    fit_temperature,
    grade_metrics,
    reliability_png,
    roc_png,
    softmax,
    youden_threshold,
)
from wsi_hcc.mil.models import build_mil_model
from wsi_hcc.models import file_sha256, weights_sha256
from wsi_hcc.store.feature_array import read_store_meta, training_data
from wsi_hcc.store.finder import find_stores, shared_features
from wsi_hcc.training.checkpoint import TrainState
from wsi_hcc.training.datasets import BagDataset, SlideLabel, class_balanced_weights, read_slide_labels
from wsi_hcc.training.metrics import confusion_png
from wsi_hcc.training.stopping import record_epoch, should_stop
from wsi_hcc.utils.atomic import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    fresh_partial_dir,
    partial_path,
    publish_dir,
)
from wsi_hcc.utils.devices import resolve_device
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.runs import prepare_out_dir, write_manifest
from wsi_hcc.utils.versions import utc_now
from wsi_hcc.utils.words import counted

__all__ = ["MilReport", "run_mil_training", "MilCohort", "load_cohort"]

FOLD_FORMAT = 1


@dataclass(frozen=True)
class MilReport:
    out_dir: Path
    folds_run: list[int]
    folds_skipped: list[int]
    metrics: dict[str, Any]
    bundle_dir: Path
    seconds_per_fold: dict[int, float]


@dataclass(frozen=True)
class MilCohort:
    slides: list[SlideLabel]
    stores: dict[str, Path]
    labels: dict[str, int]
    grades: dict[str, int]  # -1: no grade
    features: dict[str, Any]  # the stores' shared feature provenance
    feature_dim: int


def load_cohort(config: MilConfig) -> MilCohort:
    """The label CSV matched to feature stores, checked: one-line errors naming the file and the fix."""
    csv_path = Path(config.labels_csv)
    rows = read_slide_labels(csv_path)
    if not rows:
        raise WsiHccError(f"{csv_path}: the label CSV has no slides")
    found = {store.name.removesuffix(".zarr"): store for store in find_stores(config.stores)}
    stores, labels, grades = {}, {}, {}
    for line, row in enumerate(rows, start=2):
        label = config.class_map.get(row.label, row.label)
        if label not in config.class_names:
            raise WsiHccError(f"{csv_path}:{line}: label {row.label!r} is not one of class_names "
                              f"{config.class_names}; fix the CSV or map it in the config (class_map: "
                              f"{{{row.label}: {config.class_names[0]}}})")
        grade = -1
        if row.grade is not None and config.grade_names is not None:
            if row.grade not in config.grade_names:
                raise WsiHccError(f"{csv_path}:{line}: grade {row.grade!r} is not one of grade_names "
                                  f"{config.grade_names}; fix the CSV or the config")
            grade = config.grade_names.index(row.grade)
        store = found.get(row.slide)
        if store is None:
            raise WsiHccError(f"{csv_path}:{line}: slide {row.slide!r} has no store {row.slide}.zarr in "
                              f"{', '.join(config.stores)}; tile it (wsi-hcc tile) or remove the row")
        stores[row.slide], labels[row.slide], grades[row.slide] = store, config.class_names.index(label), grade
    features = shared_features(list(stores.values()))
    return MilCohort(rows, stores, labels, grades, features, int(features["feature_dim"]))


def _heads(config: MilConfig) -> dict[str, int]:
    heads = {"label": 2}
    if config.grade_names:
        heads["grade"] = len(config.grade_names)
    return heads


def _build(config: MilConfig, cohort: MilCohort):
    m = config.model
    return build_mil_model(m.name, cohort.feature_dim, _heads(config), hidden=m.hidden, dropout=m.dropout,
                           k_sample=m.k_sample)


def _model_args(config: MilConfig, cohort: MilCohort) -> dict[str, Any]:
    m = config.model
    return {"name": m.name, "in_dim": cohort.feature_dim, "heads": [[h, c] for h, c in _heads(config).items()],
            "hidden": m.hidden,
            "dropout": m.dropout, "k_sample": m.k_sample}


def _bag_loss(out, label: int, grade: int, config: MilConfig, with_instance: bool):
    import torch
    import torch.nn.functional as F

    loss = F.cross_entropy(out.logits["label"][None], torch.tensor([label]))
    if with_instance and out.instance_loss is not None:
        loss = config.model.bag_weight * loss + (1 - config.model.bag_weight) * out.instance_loss
    if "grade" in out.logits and grade >= 0:
        loss = loss + config.grade_loss_weight * F.cross_entropy(out.logits["grade"][None], torch.tensor([grade]))
    return loss


class _Bags:
    """Bags of a list of slides, read once (evaluation always uses every tile)."""

    def __init__(self, cohort: MilCohort, slides: list[str]):
        dataset = BagDataset([cohort.stores[s] for s in slides], [cohort.labels[s] for s in slides])
        self.slides = slides
        self.items = [dataset[i] for i in range(len(slides))]
        self.labels = np.array([cohort.labels[s] for s in slides], dtype=np.int64)
        self.grades = np.array([cohort.grades[s] for s in slides], dtype=np.int64)


def _evaluate(model, bags: _Bags, config: MilConfig, device) -> dict[str, Any]:
    import torch

    model.eval()
    logits: dict[str, list] = {}
    attention, loss = [], 0.0
    with torch.inference_mode():
        for item, label, grade in zip(bags.items, bags.labels, bags.grades):
            if len(item["features"]) == 0:
                raise WsiHccError(f"slide {item['slide']}: its store has no tiles; leave it out of the label CSV")
            out = model(torch.from_numpy(item["features"]).to(device))
            loss += float(_bag_loss(out, int(label), int(grade), config, with_instance=False))
            for head, value in out.logits.items():
                logits.setdefault(head, []).append(value.float().cpu().numpy())
            attention.append(out.attention.float().cpu().numpy())
    return {"loss": loss / max(1, len(bags.items)), "logits": {h: np.stack(v) for h, v in logits.items()},
            "attention": attention}


CACHE_BYTES = 2 << 30  # training bags up to this size in all are read once and kept in memory


class _TrainBags:
    """Training bags, item ``i`` as ``BagDataset`` gives it (same ``max_tiles`` subsets for a seed and
    epoch); cohorts that fit in ``CACHE_BYTES`` are read from the stores once instead of every epoch."""

    def __init__(self, cohort: MilCohort, slides: list[str], max_tiles: int | None, seed: int):
        self.dataset = BagDataset([cohort.stores[s] for s in slides], [cohort.labels[s] for s in slides],
                                  max_tiles=max_tiles, seed=seed)
        self.labels, self.max_tiles, self.seed, self.epoch = self.dataset.labels, max_tiles, seed, 0
        size = sum(int(read_store_meta(cohort.stores[s])["n_tiles"]) for s in slides) * cohort.feature_dim * 4
        self.cache = [BagDataset([cohort.stores[s]], [cohort.labels[s]])[0] for s in slides] \
            if size <= CACHE_BYTES else None

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.cache is None:
            return self.dataset[i]
        item = self.cache[i]
        n = len(item["features"])
        if self.max_tiles is None or n <= self.max_tiles:
            return item
        rng = np.random.default_rng((self.seed, self.epoch, i))  # BagDataset's rule
        keep = np.sort(rng.choice(n, self.max_tiles, replace=False))
        return {**item, "features": item["features"][keep], "coords": item["coords"][keep]}

    def input_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of every training tile's features (streamed, float64)."""
        total, sq, count = 0.0, 0.0, 0
        for i in range(len(self)):
            x = (self.cache[i] if self.cache is not None else BagDataset([self.dataset.stores[i]], [0])[0])["features"]
            total, sq, count = (total + x.sum(0, dtype=np.float64), sq + (x.astype(np.float64) ** 2).sum(0),
                                count + len(x))
        mean = total / max(1, count)
        return mean, np.sqrt(np.maximum(sq / max(1, count) - mean ** 2, 0))


def _train_fold(config: MilConfig, cohort: MilCohort, fold: int, train: list[str], validation: list[str],
                device, progress: Progress):
    import torch

    torch.manual_seed(config.seed * 1000 + fold)
    model = _build(config, cohort)
    dataset = _TrainBags(cohort, train, config.max_tiles, config.seed * 1000 + fold)
    model.set_input_stats(*dataset.input_stats())
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    grades = [cohort.grades[s] for s in train]
    val_bags = _Bags(cohort, validation)
    generator = torch.Generator().manual_seed(config.seed * 1000 + fold)
    weights = class_balanced_weights(dataset.labels) if config.class_balanced else np.ones(len(train))
    state = TrainState(config_digest=config.fold_digest())
    best = copy.deepcopy(model.state_dict())
    progress.stage(f"fold {fold}")
    for epoch in range(config.epochs):
        progress.item_started(f"epoch {epoch + 1}", epoch, config.epochs)
        progress.steps_planned(len(train))
        dataset.set_epoch(epoch)
        order = torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), len(train), replacement=True,
                                  generator=generator) if config.class_balanced else torch.randperm(
            len(train), generator=generator)
        model.train()
        total = 0.0
        for done, i in enumerate(order.tolist(), start=1):
            item = dataset[i]
            if len(item["features"]):
                out = model(torch.from_numpy(item["features"]).to(device), label=item["label"])
                loss = _bag_loss(out, item["label"], grades[i], config, with_instance=True)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
            progress.steps_done(1, f"loss {total / done:.4f}")
        val_loss = _evaluate(model, val_bags, config, device)["loss"]
        state.history.append({"epoch": epoch, "train_loss": total / max(1, len(train)), "val_loss": val_loss})
        progress.item_finished()
        if record_epoch(state, epoch, val_loss, "val_loss", config.min_delta):
            best = copy.deepcopy(model.state_dict())
        if should_stop(state, config.patience):
            state.stop_reason = f"no better validation loss for {config.patience} epochs"
            break
    state.stop_reason = state.stop_reason or "reached the configured epochs"
    progress.message(f"fold {fold}: {counted(len(state.history), 'epoch')}, best {state.best_epoch + 1} "
        f"(validation loss {state.best_value:.4f}); {state.stop_reason}")
    model.load_state_dict(best)
    return model, state


def _fold_dir(out_dir: Path, fold: int) -> Path:
    return out_dir / "folds" / f"fold{fold}"


def _run_fold(config: MilConfig, cohort: MilCohort, fold: int, split: dict[str, list[str]], out_dir: Path,
              device, progress: Progress) -> dict[str, Any]:
    started = time.perf_counter()
    model, state = _train_fold(config, cohort, fold, split["train"], split["validation"], device, progress)
    val = _evaluate(model, _Bags(cohort, split["validation"]), config, device)
    test_bags = _Bags(cohort, split["test"])
    test = _evaluate(model, test_bags, config, device)
    val_labels = [cohort.labels[s] for s in split["validation"]]
    temperature = fit_temperature(val["logits"]["label"], val_labels) if config.temperature_scaling else 1.0
    if config.threshold == "youden":
        threshold = youden_threshold(val_labels, softmax(val["logits"]["label"], temperature)[:, 1])
    else:
        threshold = float(config.threshold)
    folder = _fold_dir(out_dir, fold)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / "weights.safetensors"
    tmp = partial_path(weights)
    weights_sha = save_member(model, tmp)
    tmp.replace(weights)
    buffer = io.BytesIO()
    np.savez(buffer, **{s: a for s, a in zip(split["test"], test["attention"])})
    atomic_write_bytes(folder / "attention.npz", buffer.getvalue())
    result = {
        "format": FOLD_FORMAT, "fold": fold, "config_digest": config.fold_digest(), "split": split,
        "best_epoch": state.best_epoch, "best_val_loss": state.best_value, "stop_reason": state.stop_reason,
        "history": state.history, "temperature": temperature, "threshold": threshold,
        "weights_sha256": weights_sha, "seconds": time.perf_counter() - started,
        "validation": {"slides": split["validation"], "logits": {h: v.tolist() for h, v in val["logits"].items()}},
        "test": {"slides": split["test"], "logits": {h: v.tolist() for h, v in test["logits"].items()}},
        "finished": utc_now(),
    }
    atomic_write_json(folder / "result.json", result)  # last: the fold's done-marker
    return result


def _finished_fold(out_dir: Path, fold: int, config: MilConfig, split: dict[str, list[str]]) -> dict | None:
    import json

    folder = _fold_dir(out_dir, fold)
    try:
        result = json.loads((folder / "result.json").read_text())
    except (OSError, ValueError):
        return None
    if (result.get("format") != FOLD_FORMAT or result.get("config_digest") != config.fold_digest()
            or result.get("split") != split or not (folder / "weights.safetensors").is_file()
            or file_sha256(folder / "weights.safetensors") != result.get("weights_sha256")):
        return None
    return result


def _fold_predictions(result: dict, cohort: MilCohort) -> dict[str, Any]:
    slides = result["test"]["slides"]
    logits = {h: np.asarray(v, dtype=np.float64).reshape(len(slides), -1) for h, v in result["test"]["logits"].items()}
    probs = softmax(logits["label"], result["temperature"]) if slides else np.zeros((0, 2))
    return {"slides": slides, "labels": np.array([cohort.labels[s] for s in slides], dtype=np.int64),
            "grades": np.array([cohort.grades[s] for s in slides], dtype=np.int64), "probs": probs,
            "grade_probs": softmax(logits["grade"]) if "grade" in logits and slides else None,
            "threshold": np.full(len(slides), result["threshold"])}


def _evaluation(config: MilConfig, cohort: MilCohort, results: list[dict]) -> tuple[dict, list[dict], dict]:
    names = config.class_names
    per_fold, pictures = {}, {}
    preds = [_fold_predictions(r, cohort) for r in results]
    for r, p in zip(results, preds):
        entry = {"label": binary_metrics(p["labels"], p["probs"], r["threshold"], names, config.bootstrap,
                                         config.seed, config.calibration_bins),
                 "temperature": r["temperature"], "best_epoch": r["best_epoch"], "best_val_loss": r["best_val_loss"],
                 "seconds": r["seconds"]}
        if config.grade_names:
            entry["grade"] = grade_metrics(p["grades"], p["grade_probs"], config.grade_names)
        per_fold[f"fold{r['fold']}"] = entry
    labels = np.concatenate([p["labels"] for p in preds])
    probs = np.concatenate([p["probs"] for p in preds])
    thresholds = np.concatenate([p["threshold"] for p in preds])
    pooled = {"label": binary_metrics(labels, probs, thresholds, names, config.bootstrap, config.seed,
                                      config.calibration_bins)}
    if config.grade_names:
        pooled["grade"] = grade_metrics(np.concatenate([p["grades"] for p in preds]),
                                        np.concatenate([p["grade_probs"] for p in preds]), config.grade_names)
    aucs = [f["label"]["roc_auc"] for f in per_fold.values() if f["label"]["roc_auc"] is not None]
    metrics = {"per_fold": per_fold, "pooled": pooled,
               "fold_auc_mean": float(np.mean(aucs)) if aucs else None,
               "fold_auc_std": float(np.std(aucs)) if aucs else None,
               "notes": "test slides of each fold, threshold and temperature fitted on that fold's validation "
                        "patients only; pooled = every slide once, from the fold where it was held out"}
    curves = {f"fold {r['fold']}": (p["labels"], p["probs"][:, 1]) for r, p in zip(results, preds)}
    curves["pooled"] = (labels, probs[:, 1])
    pictures["roc.png"] = roc_png(curves, title="ROC, cross-validation: each fold's held-out slides")
    pictures["reliability.png"] = reliability_png(labels, probs, config.calibration_bins)
    matrices = {k: v["label"]["confusion_matrix"] for k, v in per_fold.items()}
    matrices["pooled"] = pooled["label"]["confusion_matrix"]
    pictures["confusion.png"] = confusion_png(matrices, names, unit="slides")
    if config.grade_names:
        pictures["grade_confusion.png"] = confusion_png({"pooled": pooled["grade"]["confusion_matrix"]},
                                                        config.grade_names, unit="slides")
    rows = []
    patient_of = {s.slide: s.patient for s in cohort.slides}
    for r, p in zip(results, preds):
        for i, slide in enumerate(p["slides"]):
            row = {"slide": slide, "patient": patient_of[slide], "fold": r["fold"], "label": names[p["labels"][i]],
                   "p_" + names[1]: float(p["probs"][i, 1]), "threshold": r["threshold"],
                   "predicted": names[int(p["probs"][i, 1] >= r["threshold"])]}
            if config.grade_names:
                row["grade"] = config.grade_names[p["grades"][i]] if p["grades"][i] >= 0 else ""
                grade = config.grade_names[int(p["grade_probs"][i].argmax())]
                row["predicted_grade"] = grade if row["predicted"] == names[1] else ""  # only for a tumour call
            rows.append(row)
    return metrics, rows, pictures


_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".h5")


def locate_backbone_weights(config: MilConfig, cohort: MilCohort) -> Path:
    """The weights file the cohort's features were made with: ``config.backbone_weights`` (checked),
    else the file with the recorded sha256 beside the stores or named by their features manifest."""
    import json

    sha = cohort.features.get("weights_sha256")
    name = cohort.features.get("backbone")
    if config.backbone_weights:
        path = Path(config.backbone_weights)
        if not path.exists():
            raise WsiHccError(f"{path}: backbone weights not found; check --backbone-weights")
        if sha and weights_sha256(path) != sha:
            raise WsiHccError(f"{path}: not the weights the features were made with (sha256 differs from "
                              f"{sha[:12]}); pass the file given to wsi-hcc features --weights")
        return path
    folders = list(dict.fromkeys(p.parent for p in cohort.stores.values()))
    if sha:
        candidates: list[Path] = []
        for folder in folders:
            try:
                recorded = json.loads((folder / "features-manifest.json").read_text()).get("weights")
            except (OSError, json.JSONDecodeError):
                recorded = None
            if recorded:
                candidates += [Path(recorded), folder / recorded]
            candidates += sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        for candidate in dict.fromkeys(candidates):
            if candidate.exists() and weights_sha256(candidate) == sha:
                return candidate
    raise WsiHccError(f"{folders[0]}: the weights of the feature backbone {name} (sha256 {str(sha)[:12]}) are not "
                      "beside the stores; pass --backbone-weights PATH (the file wsi-hcc features used)")


def _write_bundle(out_dir: Path, config: MilConfig, cohort: MilCohort, results: list[dict],
                  config_text: str, backbone_weights: Path) -> Path:
    from safetensors.torch import load_file

    final = out_dir / "model"
    tmp = fresh_partial_dir(final)
    if config.bundle == "best_fold":
        chosen = [min(results, key=lambda r: (r["best_val_loss"], r["fold"]))]
        temperature, threshold = chosen[0]["temperature"], chosen[0]["threshold"]
    else:
        chosen = results
        temperature = float(np.mean([r["temperature"] for r in results]))
        threshold = float(np.median([r["threshold"] for r in results]))
    members = [(r["fold"], load_file(str(_fold_dir(out_dir, r["fold"]) / "weights.safetensors"))) for r in chosen]
    first_store = read_store_meta(next(iter(cohort.stores.values())))
    backbone_file, backbone = bundle_backbone(backbone_weights, cohort.features["backbone"], cohort.features["card"],
                                              first_store["config"], cohort.features["dtype"])
    card = {
        "kind": config.bundle,
        "class_names": config.class_names, "positive_class": config.class_names[1],
        "class_map": dict(config.class_map),  # classify --labels maps a label CSV's words the same way
        "grade_names": config.grade_names, "threshold": threshold, "temperature": temperature,
        "threshold_rule": config.threshold if isinstance(config.threshold, str) else "fixed",
        "model": _model_args(config, cohort), "backbone": backbone,
        "members": [{"fold": r["fold"], "best_val_loss": r["best_val_loss"]} for r in chosen],
        "input": "one bag: float32 (N, feature_dim) tile features from the backbone below, rows in any order",
        "features": {k: cohort.features.get(k) for k in ("digest", "backbone", "feature_dim", "dtype", "model_sha256",
                                                          "weights_sha256", "stain_normalised_on_the_fly", "card")},
        "feature_versions": cohort.features.get("versions"), "config_digest": config.fold_digest(),
        "training_data": training_data(list(cohort.stores.values()), [s.patient for s in cohort.slides],
                                       config.labels_csv),
        "selection": "lowest validation loss" if config.bundle == "best_fold" else "all folds, mean of probabilities",
    }
    save_mil_bundle(tmp, card, members, backbone_file, config_text)
    publish_dir(tmp, final)
    return final


def run_mil_training(config: MilConfig, out_dir: str | Path, *, config_path: str | None = None,
                     progress: Progress | None = None) -> MilReport:
    """Cross-validate an attention-MIL model on feature stores and write metrics, pictures and a bundle."""
    import yaml

    progress = progress or silent_progress()
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir)
    device = resolve_device(config.device)
    started = utc_now()
    cohort = load_cohort(config)
    backbone_weights = locate_backbone_weights(config, cohort)
    folds = patient_folds(cohort.slides, config.folds, config.seed)
    by_stem = {s.slide: s for s in cohort.slides}
    splits = []
    for k, test in enumerate(folds):
        rest = [by_stem[s] for f, slides in enumerate(folds) if f != k for s in slides]
        train, validation = split_validation(rest, config.validation_fraction, config.seed + k)
        if len({cohort.labels[s] for s in train}) < 2:
            raise WsiHccError(f"{config.labels_csv}: fold {k} has training slides of one class only; "
                              "add slides of both classes or pass a lower --folds")
        splits.append({"train": train, "validation": validation, "test": test})
    atomic_write_json(out_dir / "splits.json", {
        "folds": [{"fold": k, **s, "patients": sorted({by_stem[x].patient for x in s["test"]})}
                  for k, s in enumerate(splits)], "seed": config.seed})
    import torch

    results, ran, skipped, seconds = [], [], [], {}
    threads = torch.get_num_threads()
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        for k, split in enumerate(splits):
            result = _finished_fold(out_dir, k, config, split)
            if result is not None:
                progress.message(f"fold {k}: already done, skipped")
                skipped.append(k)
            else:
                progress.message(f"fold {k}: training on {counted(len(split['train']), 'slide')}, validating on "
                    f"{len(split['validation'])}, testing on {len(split['test'])}")
                result = _run_fold(config, cohort, k, split, out_dir, device, progress)
                ran.append(k)
            seconds[k] = result["seconds"]
            results.append(result)
    finally:
        torch.set_num_threads(threads)
    metrics, rows, pictures = _evaluation(config, cohort, results)
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_csv(out_dir / "predictions.csv", list(rows[0]), rows)
    for name, data in pictures.items():
        atomic_write_bytes(out_dir / name, data)
    config_text = yaml.safe_dump({"mil": config.model_dump(mode="json")}, sort_keys=False)
    bundle = _write_bundle(out_dir, config, cohort, results, config_text, backbone_weights)
    write_manifest(out_dir / "run-manifest.json", "train-mil", started, config_path=config_path,
                   config=config.model_dump(mode="json"), device=str(device), features=cohort.features,
                   folds_run=ran, folds_skipped=skipped, seconds_per_fold=seconds,
                   stores=[{"slide": s, "path": str(p.resolve()), "attrs_sha256": file_sha256(p / ".zattrs")}
                           for s, p in cohort.stores.items()])
    return MilReport(out_dir, ran, skipped, metrics, bundle, seconds)


GRADE_NAMES = ["G1", "G2", "G3"]


def synthetic_cohort(root: str | Path, n_slides: int = 40, size_px: tuple[int, int] = (1536, 1024),
                     target_mpp: float = 1.0, tile_px: int = 32, seed: int = 0, grades: bool = True) -> dict[str, Any]:
    """A cohort with a known answer: ``n_slides`` synthetic slides (even index: with tumour), tiled,
    embedded with the fixed ``colour_texture`` descriptor, and a label CSV (one patient per slide).

    With ``grades`` the tumour slides cycle through grades G1, G2, G3 (nuclei larger, darker and
    more crowded as the grade rises; ``wsi_hcc.synth``) and the CSV has a ``grade`` column.
    Returns ``{"stores": folder, "labels_csv": path, "slides": {stem: SyntheticSlide}, "backbone": name}``.
    Reuses what is already in ``root`` (tiling and features skip finished stores).
    """
    from wsi_hcc.mil.handcrafted import register_colour_texture
    from wsi_hcc.pipelines.features import run_features
    from wsi_hcc.pipelines.tile import run_tile
    from wsi_hcc.synth import write_synthetic_slide
    from wsi_hcc.tiling.config import TileConfig

    root = Path(root)
    backbone = register_colour_texture(f"colour_texture_{tile_px}px_{target_mpp:g}mpp", target_mpp, tile_px)
    slides, rows = {}, []
    for i in range(n_slides):
        stem, tumour = f"syn{i:03d}", i % 2 == 0
        grade = 1 + (i // 2) % 3 if tumour and grades else None
        slides[stem] = write_synthetic_slide(root / "slides" / f"{stem}.svs", size_px=size_px, mpp=target_mpp / 2,
                                             seed=seed * 1000 + i, tumour=tumour, grade=grade, tissue_fraction=0.7)
        grade_name = GRADE_NAMES[grade - 1] if grade else ""
        rows.append(f"{stem},patient_{i:03d},{'tumour' if tumour else 'non_tumour'}"
                    + (f",{grade_name}" if grades else "") + "\n")
    report = run_tile([s.path for s in slides.values()], root / "stores", TileConfig(target_mpp=target_mpp,
                                                                                      tile_px=tile_px, qc=False))
    if report.count("failed"):
        raise WsiHccError(f"synthetic cohort: tiling failed ({report.failed[0].reason})")
    report = run_features([root / "stores"], root / "stores", backbone, device="cpu", batch_size=256,
                          decode_threads=0)
    if report.count("failed"):
        raise WsiHccError(f"synthetic cohort: features failed ({report.failed[0].reason})")
    header = "slide,patient,label" + (",grade" if grades else "") + "\n"
    atomic_write_bytes(root / "slides.csv", (header + "".join(rows)).encode())
    return {"stores": root / "stores", "labels_csv": root / "slides.csv", "slides": slides, "backbone": backbone}


def tiles_in_mask(store: Path, slide, label: int = 2) -> np.ndarray:
    """For each tile of ``store``, whether its centre lies in ground-truth ``label`` of a synthetic ``slide``."""
    from PIL import Image

    from wsi_hcc.store.patch_store import open_store

    meta = read_store_meta(store)
    coords = np.asarray(open_store(store)["coords"][:], dtype=np.int64)
    spec = meta["tile_spec"]
    level0_px = spec["tile_px"] * spec["target_mpp"] / slide.mpp
    mask = np.asarray(Image.open(slide.mask_path))
    centre = ((coords + level0_px / 2) // slide.mask_downsample).astype(np.int64)
    cy = np.clip(centre[:, 1], 0, mask.shape[0] - 1)
    cx = np.clip(centre[:, 0], 0, mask.shape[1] - 1)
    return mask[cy, cx] == label


def attention_in_mask(out_dir: str | Path, cohort: dict[str, Any], top_fraction: float = 0.1) -> dict[str, Any]:
    """Over the held-out tumour slides of a run: the share of each slide's ``top_fraction`` most-attended
    tiles whose centre lies in the ground-truth tumour mask (pooled over slides, and per slide)."""
    out_dir = Path(out_dir)
    hits = total = 0
    per_slide = {}
    for fold_dir in sorted((out_dir / "folds").glob("fold*")):
        with np.load(fold_dir / "attention.npz", allow_pickle=False) as attention:
            for stem in attention.files:
                slide = cohort["slides"][stem]
                in_mask = tiles_in_mask(cohort["stores"] / f"{stem}.zarr", slide)
                if not in_mask.any():
                    continue  # a slide without tumour tiles
                a = attention[stem]
                k = max(1, int(round(top_fraction * len(a))))
                top = np.argsort(-a, kind="stable")[:k]
                per_slide[stem] = float(in_mask[top].mean())
                hits += int(in_mask[top].sum())
                total += k
    return {"fraction": hits / total if total else None, "tiles": total, "per_slide": per_slide}
