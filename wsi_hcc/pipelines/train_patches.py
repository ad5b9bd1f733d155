"""Patch-classifier training and Grad-CAM explanations: ``wsi-hcc train-patches`` and ``wsi-hcc explain``.

A training run writes into one folder: ``splits.json`` (at the start), ``last-checkpoint.pt`` (after
every epoch and every ``checkpoint_minutes`` within one), ``best.safetensors`` (whenever the
monitored validation metric improves), and at the end ``metrics.json``, ``predictions.csv``,
``confusion.png``, ``curves.png`` and ``model/`` (the best weights as a model folder, for
``--weights``, with what they were trained on and their test metrics); ``run-manifest.json``
records the provenance throughout.
Every file appears under a temporary name first and is renamed when complete. Rerunning the same
command resumes from the last checkpoint; a finished run is not redone.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.models import (
    ModelCard,
    card_from_weights,
    create_backbone,
    file_sha256,
    read_state_dict,
    save_model_folder,
    save_weights,
)
from wsi_hcc.store.feature_array import check_store_fits_card, read_store_meta, stain_normalizer_for, training_data
from wsi_hcc.store.patch_store import TileReader, open_store
from wsi_hcc.training.checkpoint import TrainState, apply_checkpoint, load_checkpoint, save_checkpoint
from wsi_hcc.training.config import MONITOR_MODES, TrainConfig
from wsi_hcc.training.data import (
    EpochItems,
    TrainingData,
    class_loss_weights,
    collate_tiles,
    epoch_order,
    load_training_data,
)
from wsi_hcc.training.errors import TrainError, worker_error_line
from wsi_hcc.training.gradcam import explain_tiles, explanation_png
from wsi_hcc.training.loop import Trainer, build_optimizer, lr_at
from wsi_hcc.training.metrics import classification_metrics, confusion_png, curves_png
from wsi_hcc.training.stopping import record_epoch, should_stop
from wsi_hcc.utils.atomic import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    fresh_partial_dir,
    publish_dir,
)
from wsi_hcc.utils.devices import resolve_device
from wsi_hcc.utils.pool import usable_cpus
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.runs import prepare_out_dir
from wsi_hcc.utils.versions import stack_versions, utc_now
from wsi_hcc.viz.tiles import explanation_title

__all__ = ["TrainReport", "run_training", "ExplainReport", "run_explain", "OUTPUTS", "default_loader_workers"]

OUTPUTS = ("best.safetensors", "last-checkpoint.pt", "metrics.json", "predictions.csv", "confusion.png",
           "curves.png", "splits.json", "run-manifest.json")
_REACHED_EPOCHS = "reached the configured epochs"


@dataclass(frozen=True)
class TrainReport:
    out_dir: Path
    status: str  # "done" or "already done"
    epochs_run: int
    best_epoch: int | None
    stop_reason: str
    metrics: dict[str, Any]
    resumed_from: dict[str, int] | None = None




def _store_record(slide) -> dict[str, Any]:
    attrs = (slide.store / ".zattrs").read_bytes()
    return {"stem": slide.stem, "path": str(slide.store.resolve()), "n_tiles": int(slide.meta["n_tiles"]),
            "n_labelled": int((slide.labels >= 0).sum()), "patient": slide.patient,
            "slide_fingerprint": slide.meta.get("slide", {}).get("fingerprint"),
            "attrs_sha256": hashlib.sha256(attrs).hexdigest()}


def _trained_card(base: ModelCard, data: TrainingData, config: TrainConfig, digest: str) -> ModelCard:
    return replace(base, num_classes=len(data.class_names), class_names=tuple(data.class_names),
                   input_px=config.input_px or base.input_px, target_mpp=data.target_mpp, tile_px=data.tile_px,
                   stain_reference=data.stain_reference, weights_sha256=None,
                   notes=f"trained with wsi-hcc train-patches (config {digest}) from "
                         f"{'random initialisation' if not config.weights else Path(config.weights).name}")


def _epoch_line(record: dict[str, Any], best: bool) -> str:
    def fmt(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    return (f"epoch {record['epoch'] + 1}: train loss {fmt(record['train_loss'])}, val loss {fmt(record['val_loss'])}, "
            f"val acc {fmt(record['val_accuracy'])}, val bal. acc {fmt(record['val_balanced_accuracy'])}, "
            f"val AUC {fmt(record['val_auc'])}, lr {record['lr']:.3g}" + ("  (best)" if best else ""))


def _check_forward(model, card: ModelCard, device) -> None:
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, 3, card.input_px, card.input_px, device=device))
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:200]
        raise TrainError(f"backbone {card.architecture} cannot take {card.input_px} px inputs ({detail}); "
                         "set input_px in the config to a size it accepts") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, card.num_classes):
        raise TrainError(f"backbone {card.architecture} gives outputs of shape {tuple(out.shape)[1:]}, not "
                         f"({card.num_classes},) class scores; use a classifier backbone")


def default_loader_workers(device, cpus: int | None = None) -> int:
    """DataLoader worker processes when the config leaves ``num_workers`` out: a GPU wants tiles decoded
    and augmented beside it (one core stays with the training loop); on the CPU a worker only takes a
    core from the model, so small machines decode in the loop. Never more than the cores this process
    may use (torch warns above that)."""
    if cpus is None:
        cpus = usable_cpus()
    if device.type == "cuda":
        return max(0, min(8, cpus - 1))
    return 0 if cpus <= 4 else min(4, cpus // 4)


def _loader(items, batch_size: int, workers: int, device, drop_last: bool = False):
    from torch.utils.data import DataLoader

    return DataLoader(items, batch_size=batch_size, shuffle=False, num_workers=workers,
                      collate_fn=collate_tiles, pin_memory=device.type == "cuda", drop_last=drop_last,
                      prefetch_factor=4 if workers else None)


def _iterate(loader):
    """Batches of a loader, with errors from DataLoader workers brought back to one line."""
    try:
        yield from loader
    except WsiHccError as exc:
        raise TrainError(worker_error_line(exc)) from None


class _Run:
    """One training run in ``out_dir``: set up, resume, train, evaluate, write outputs."""

    def __init__(self, config: TrainConfig, out_dir: Path, config_path: str | None, restart: bool,
                 progress: Progress):
        import torch

        self.config, self.out_dir, self.config_path, self.progress = config, out_dir, config_path, progress
        self.started = utc_now()
        self.digest = config.resume_digest()
        prepare_out_dir(out_dir)
        self.checkpoint_path = out_dir / "last-checkpoint.pt"
        self.data = load_training_data(config)
        self.device = resolve_device(config.device)
        self.workers = config.num_workers if config.num_workers is not None else default_loader_workers(self.device)
        self.monitor = config.early_stopping.metric
        if self.monitor == "val_auc":
            classes = {int(v) for s in self.data.split_slides("validation") for v in np.unique(s.labels) if v >= 0}
            if len(classes) < len(self.data.class_names):
                raise TrainError(f"{config.labels.slide_csv or config.labels.annotations}: the validation split lacks "
                                 "some classes, so its ROC AUC is undefined; pass --monitor val_loss, or "
                                 "--split-seed N for another split")
        torch.manual_seed(config.seed)
        model = create_backbone(config.backbone, num_classes=len(self.data.class_names), weights=config.weights)
        self.init_weights_sha256 = model.card.weights_sha256
        self.card = _trained_card(model.card, self.data, config, self.digest)
        model.card = self.card
        model.to(self.device)
        _check_forward(model, self.card, self.device)
        self.model = model
        self.train_set = self.data.dataset("train")
        self.train_index = self.data.split_index("train")
        weights = class_loss_weights(self.train_set.labels, len(self.data.class_names)) \
            if config.class_weighting.loss == "balanced" else None
        self.class_weights = weights
        self.trainer = Trainer(model, self.card, build_optimizer(model, config.optimizer), self.device,
                               amp=config.amp, class_weights=weights)
        self.transform = None
        if isinstance(config.augmentation, list):
            from wsi_hcc.stain.augment import build_augmentation

            self.transform = build_augmentation(config.augmentation, seed=config.seed)
        elif config.augmentation:
            from wsi_hcc.stain.augment import load_augmentation

            self.transform = load_augmentation(config.augmentation, seed=config.seed)
        self.state = TrainState(config_digest=self.digest)
        self.resumed_from = None
        self.stores = [_store_record(s) for s in self.data.slides]
        if restart:  # only once the new run is known to be set up
            for name in OUTPUTS:
                (out_dir / name).unlink(missing_ok=True)
            shutil.rmtree(out_dir / "model", ignore_errors=True)

    # -- provenance ---------------------------------------------------------------------------

    def provenance(self) -> dict[str, Any]:
        best = self.out_dir / "best.safetensors"
        return {
            "config": self.config.model_dump(mode="json"), "config_file": self.config_path,
            "config_digest": self.digest, "backbone": self.config.backbone,
            "init_weights": str(Path(self.config.weights).resolve()) if self.config.weights else None,
            "init_weights_sha256": self.init_weights_sha256, "card": self.card.to_dict(),
            "best_weights_sha256": file_sha256(best) if best.is_file() else None,
            "stores": self.stores, "device": str(self.device), "loader_workers": self.workers,
            "amp": self.trainer.amp,
            "class_loss_weights": None if self.class_weights is None else [float(w) for w in self.class_weights],
            "versions": stack_versions(),
        }

    def write_manifest(self, status: str) -> None:
        atomic_write_json(self.out_dir / "run-manifest.json", {
            "command": "train-patches", "status": status, "started": self.started, "updated": utc_now(),
            "resumed_from": self.resumed_from, "epochs_run": self.state.epoch, "best_epoch": self.state.best_epoch,
            "stop_reason": self.state.stop_reason, "splits": self.data.record()["splits"],
            "left_out": list(self.data.left_out), **self.provenance(),
        })

    # -- resume -------------------------------------------------------------------------------

    def resume(self) -> None:
        if not self.checkpoint_path.is_file():
            return
        payload = load_checkpoint(self.checkpoint_path)
        if payload["state"].config_digest != self.digest:
            raise TrainError(f"{self.checkpoint_path}: from a run with other settings "
                             f"(config {payload['state'].config_digest}, "
                             f"now {self.digest}); pass --restart to discard it or choose another --out")
        self.state = apply_checkpoint(payload, self.model, self.trainer.optimizer, self.trainer.scaler)
        if self.state.done and self.state.stop_reason == _REACHED_EPOCHS and self.config.epochs > self.state.epoch:
            self.state.done, self.state.stop_reason = False, ""  # asked for more epochs: carry on
        self.resumed_from = {"epoch": self.state.epoch, "batch": self.state.batch}
        if not self.state.done:
            self.progress.message(f"resuming {self.out_dir} at epoch {self.state.epoch + 1}, batch {self.state.batch}")

    def checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_path, self.state, self.model, self.trainer.optimizer, self.trainer.scaler)

    # -- training -----------------------------------------------------------------------------

    def train(self) -> None:
        import torch

        config, state = self.config, self.state
        bs = config.batch_size
        copies = 3 if config.flip_copies else 1
        tile_labels = np.repeat(self.train_set.labels, copies)
        n = len(tile_labels)
        drop_last = n % bs == 1 and n > 1  # a lone last tile would break BatchNorm in training mode
        n_batches = n // bs if drop_last else -(-n // bs)
        while not state.done and state.epoch < config.epochs:
            epoch = state.epoch
            started = time.perf_counter()
            self.trainer.set_lr(lr_at(config.optimizer, config.schedule, epoch))
            order = epoch_order(tile_labels, config.seed, epoch, config.class_weighting.sampler)
            items = EpochItems(self.train_set, order, self.transform, config.seed, epoch,
                               start=state.batch * bs, index=self.train_index, copies=copies)
            self.progress.item_started(f"epoch {epoch + 1}/{config.epochs}", epoch, config.epochs)
            self.progress.steps_planned(n_batches, state.batch)
            last_save = time.monotonic()
            for tiles, batch_labels, _ in _iterate(_loader(items, bs, self.workers, self.device, drop_last)):
                try:
                    loss = self.trainer.step(tiles, batch_labels)
                except torch.cuda.OutOfMemoryError:
                    raise TrainError(f"out of GPU memory at batch_size {bs} and {self.card.input_px} px inputs; "
                                     "lower batch_size (--batch-size)") from None
                state.batch += 1
                state.epoch_loss_sum += loss * len(batch_labels)
                state.epoch_seen += len(batch_labels)
                self.progress.steps_done(1, f"loss {state.epoch_loss_sum / state.epoch_seen:.4f}")
                if state.batch < n_batches and time.monotonic() - last_save >= 60 * config.checkpoint_minutes:
                    self.checkpoint()
                    last_save = time.monotonic()
            self.finish_epoch(epoch, time.perf_counter() - started)

    def evaluate(self, split: str):
        dataset = self.data.dataset(split)
        index = self.data.split_index(split)
        if len(dataset) == 0:
            return None, index
        items = EpochItems(dataset, np.arange(len(dataset)), index=index)
        self.progress.steps_planned(len(dataset), name=split)
        result = self.trainer.evaluate(_iterate(_loader(items, max(self.config.batch_size, 64), self.workers,
                                                        self.device)),
                                       on_batch=self.progress.steps_done)
        return result, index

    def finish_epoch(self, epoch: int, seconds: float) -> None:
        config, state = self.config, self.state
        result, _ = self.evaluate("validation")
        metrics = classification_metrics(result.labels, result.probs, self.data.class_names)
        record = {"epoch": epoch, "lr": lr_at(config.optimizer, config.schedule, epoch),
                  "train_loss": state.epoch_loss_sum / state.epoch_seen if state.epoch_seen else None,
                  "val_loss": result.loss, "val_accuracy": metrics["accuracy"],
                  "val_balanced_accuracy": metrics["balanced_accuracy"], "val_auc": metrics["roc_auc"],
                  "seconds": round(seconds, 3)}
        best = record_epoch(state, epoch, record[self.monitor], self.monitor, config.early_stopping.min_delta)
        if best:
            self.save_best(epoch)
        state.history.append(record)
        state.epoch, state.batch, state.epoch_loss_sum, state.epoch_seen = epoch + 1, 0, 0.0, 0
        if should_stop(state, config.early_stopping.patience):
            state.done = True
            state.stop_reason = (f"early stopping: {self.monitor} did not improve for "
                                 f"{config.early_stopping.patience} epochs")
        elif state.epoch >= config.epochs:
            state.done, state.stop_reason = True, _REACHED_EPOCHS
        self.checkpoint()
        self.progress.message(_epoch_line(record, best))
        self.progress.item_finished()
        self.write_manifest("running" if not state.done else "evaluating")

    def save_best(self, epoch: int) -> None:
        card = replace(self.card, extra={**self.card.extra, "training": {
            "config_digest": self.digest, "best_epoch": epoch, "monitor": self.monitor,
            "monitor_value": self.state.best_value, "stores": [s["stem"] for s in self.stores],
            "init_weights_sha256": self.init_weights_sha256, "versions": stack_versions()}})
        save_weights(self.model, card, self.out_dir / "best.safetensors")

    # -- final outputs ------------------------------------------------------------------------

    def finalise(self) -> dict[str, Any]:
        best = self.out_dir / "best.safetensors"
        if self.state.best_epoch is None or not best.is_file():
            raise TrainError(f"{self.out_dir}: no best.safetensors (the {self.monitor} of every epoch was undefined); "
                             "pass --monitor val_loss")
        # the checkpoint keeps the last epoch's weights; metrics are those of the best epoch
        self.model.load_state_dict({k: v.to(self.device) for k, v in read_state_dict(best).items()})
        self.model.card = card_from_weights(best)
        splits, rows, matrices = {}, [], {}
        for split in ("validation", "test"):
            result, index = self.evaluate(split)
            if result is None:
                continue
            splits[split] = classification_metrics(result.labels, result.probs, self.data.class_names)
            splits[split]["loss"] = result.loss
            matrices[split] = splits[split]["confusion_matrix"]
            rows.extend(_prediction_rows(split, result, index, self.data.class_names))
        metrics = {
            "class_names": list(self.data.class_names), "monitor": self.monitor,
            "monitor_mode": MONITOR_MODES[self.monitor], "best_epoch": self.state.best_epoch,
            "best_value": self.state.best_value, "epochs_run": self.state.epoch, "stop_reason": self.state.stop_reason,
            "evaluated_weights": "best.safetensors", "splits": splits, "history": self.state.history,
            "provenance": self.provenance(),
        }
        _write_predictions(self.out_dir / "predictions.csv", rows, self.data.class_names)
        atomic_write_bytes(self.out_dir / "confusion.png", confusion_png(matrices, self.data.class_names))
        atomic_write_bytes(self.out_dir / "curves.png", curves_png(self.state.history, self.monitor,
                                                                   self.state.best_epoch))
        atomic_write_json(self.out_dir / "metrics.json", metrics)
        tmp = fresh_partial_dir(self.out_dir / "model")
        learnt_from = training_data([Path(s["path"]) for s in self.stores], [s["patient"] for s in self.stores],
                                    self.config.labels.slide_csv)
        save_model_folder(self.model, tmp, training={**learnt_from, "stores": self.stores, "metrics": splits,
                                                     "config_digest": self.digest})
        publish_dir(tmp, self.out_dir / "model")
        self.write_manifest("done")
        return metrics


def _prediction_rows(split, result, index, class_names):
    predicted = result.probs.argmax(axis=1)
    for k, position in enumerate(result.positions):
        x, y = index.coords[position]
        yield [split, index.stems[int(index.store_of[position])], int(index.tile_of[position]), int(x), int(y),
               class_names[int(result.labels[k])], class_names[int(predicted[k])],
               *[f"{p:.6f}" for p in result.probs[k]]]


def _write_predictions(path: Path, rows, class_names) -> None:
    atomic_write_csv(path, ["split", "slide", "tile", "x", "y", "label", "predicted", *[f"p_{c}" for c in class_names]],
                     rows)


def run_training(config: TrainConfig, out_dir: str | Path, *, config_path: str | None = None, restart: bool = False,
                 progress: Progress | None = None) -> TrainReport:
    """Train a patch classifier as ``config`` says, into ``out_dir``; resumes a killed run there.

    Raises ``WsiHccError`` subclasses (one line) for bad data, settings or outputs.
    """
    out_dir = Path(out_dir)
    run = _Run(config, out_dir, config_path, restart, progress or silent_progress())
    run.resume()
    metrics_path = out_dir / "metrics.json"
    if run.state.done and metrics_path.is_file():
        import json

        try:
            metrics = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError):
            metrics = None
        if metrics and metrics.get("provenance", {}).get("config_digest") == run.digest:
            return TrainReport(out_dir, "already done", run.state.epoch, run.state.best_epoch, run.state.stop_reason,
                               metrics, run.resumed_from)
    atomic_write_json(out_dir / "splits.json", run.data.record())
    run.write_manifest("running")
    run.train()
    metrics = run.finalise()
    return TrainReport(out_dir, "done", run.state.epoch, run.state.best_epoch, run.state.stop_reason, metrics,
                       run.resumed_from)


# -- explain --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainReport:
    out_dir: Path
    json_path: Path
    pictures: tuple[Path, ...]
    tiles: tuple[dict[str, Any], ...]


def _explain_model(weights: str | Path, backbone: str | None):
    weights = Path(weights)
    if not weights.exists():
        raise TrainError(f"{weights}: weights file not found; pass a model folder or a local .safetensors, .pt/.pth or "
                         ".h5 file")
    card = card_from_weights(weights)
    name = backbone or (card.architecture if card is not None else None)
    if name is None:
        raise TrainError(f"{weights}: carries no model card; pass --arch NAME (resnet34, livernet, a timm name)")
    model = create_backbone(name, weights=weights)
    if model.card.num_classes < 1:
        raise TrainError(f"{weights}: a feature extractor without class scores; Grad-CAM needs a classifier")
    return model


def run_explain(store: str | Path, weights: str | Path, out_dir: str | Path, *, backbone: str | None = None,
                tiles: list[int] | None = None, top: int | None = None, class_name: str | None = None,
                device: str = "auto", batch_size: int = 16, alpha: float = 0.45,
                progress: Progress | None = None) -> ExplainReport:
    """Grad-CAM overlays for chosen tiles of a patch store (``tiles``), or its ``top`` scoring tiles.

    Each picture is ``<stem>_tile<index>_<class>.png`` (the tile, then its overlay); the scores go to
    ``<stem>.explain.json``. The class explained is ``class_name``, else each tile's predicted class
    (with ``tiles``) or the last class, the positive one of a binary model (with ``top``).
    """
    import torch

    progress = progress or silent_progress()
    store, out_dir = Path(store), Path(out_dir)
    if (tiles is None) == (top is None):
        raise TrainError("choose tiles with --tiles 0,5,9 or --top K (one of them)")
    meta = read_store_meta(store)
    torch_device = resolve_device(device)
    model = _explain_model(weights, backbone).to(torch_device)
    card = model.card
    check_store_fits_card(store, meta, card, allow_resize=True)  # explain shows the model as it was trained
    prepare_out_dir(out_dir)
    reader = TileReader(store)
    n_tiles = len(reader)
    if n_tiles == 0:
        raise TrainError(f"{store}: has no tiles to explain")
    target = None
    if class_name is not None:
        if class_name not in card.class_names:
            raise TrainError(f"class {class_name!r} is not one of the model's classes {list(card.class_names)}; "
                             "fix --class")
        target = card.class_names.index(class_name)
    normalizer = stain_normalizer_for(meta, card)
    if top is not None:
        target = card.num_classes - 1 if target is None else target
        tiles = _top_tiles(model, reader, target, top, batch_size, torch_device, normalizer, progress)
    bad = [t for t in tiles if not 0 <= t < n_tiles]
    if bad:
        raise TrainError(f"{store}: tile {bad[0]} is out of range (the store has {n_tiles} tiles, 0 to {n_tiles - 1})")
    coords = np.asarray(open_store(store)["coords"][:])
    stem = store.name.removesuffix(".zarr")
    pictures, records = [], []
    progress.steps_planned(len(tiles), name="explain")
    for start in range(0, len(tiles), batch_size):
        chosen = tiles[start:start + batch_size]
        raw = np.stack([reader[t] for t in chosen])
        batch = torch.from_numpy(raw)
        if normalizer is not None:
            batch = torch.from_numpy(np.asarray(normalizer.transform(raw)))
        maps, probs = explain_tiles(model, batch, class_idx=target, device=torch_device)
        predicted = probs.argmax(axis=1)
        classes = [target if target is not None else int(p) for p in predicted]
        for k, tile in enumerate(chosen):
            name = card.class_names[classes[k]]
            path = out_dir / f"{stem}_tile{tile}_{_safe(name)}.png"
            title = explanation_title(name, float(probs[k][classes[k]]), card.class_names[int(predicted[k])],
                                      f"{stem} tile {tile}")
            atomic_write_bytes(path, explanation_png(raw[k], maps[k], alpha, title))
            pictures.append(path)
            records.append({"tile": int(tile), "x": int(coords[tile][0]), "y": int(coords[tile][1]),
                            "explained_class": name, "predicted": card.class_names[int(predicted[k])],
                            "scores": {c: float(p) for c, p in zip(card.class_names, probs[k])},
                            "picture": path.name, "title": title})
        progress.steps_done(len(chosen))
    json_path = out_dir / f"{stem}.explain.json"
    atomic_write_json(json_path, {
        "command": "explain", "created": utc_now(), "store": str(store.resolve()),
        "slide_fingerprint": meta.get("slide", {}).get("fingerprint"), "weights": str(Path(weights).resolve()),
        "weights_sha256": card.weights_sha256, "card": card.to_dict(), "cam_layer": _cam_layer(model),
        "selection": {"tiles": None, "top": top} if top is not None else {"tiles": list(tiles), "top": None},
        "stain_normalised_on_the_fly": normalizer is not None, "tiles": records, "versions": stack_versions(),
    })
    return ExplainReport(out_dir, json_path, tuple(pictures), tuple(records))


def _cam_layer(model) -> str:
    from wsi_hcc.training.gradcam import find_cam_layer

    return find_cam_layer(model, model.card)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _probabilities(model, batch, device) -> np.ndarray:
    import torch

    from wsi_hcc.models import to_model_input

    model.eval()
    with torch.inference_mode():
        logits = model(to_model_input(batch.to(device), model.card))
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


def _top_tiles(model, reader, target: int, top: int, batch_size: int, device, normalizer, progress) -> list[int]:
    import torch

    n = len(reader)
    progress.steps_planned(n, name="scoring")
    scores = np.empty(n, dtype=np.float64)
    step = max(batch_size, 64)
    for start in range(0, n, step):
        raw = np.stack([reader[i] for i in range(start, min(start + step, n))])
        if normalizer is not None:
            raw = np.asarray(normalizer.transform(raw))
        scores[start:start + len(raw)] = _probabilities(model, torch.from_numpy(raw), device)[:, target]
        progress.steps_done(len(raw))
    order = np.lexsort((np.arange(n), -scores))  # highest score first, ties by tile index
    return [int(i) for i in order[:top]]
