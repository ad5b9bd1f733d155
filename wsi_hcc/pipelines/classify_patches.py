"""``wsi-hcc classify`` with a patch-classifier model folder (``wsi-hcc bundle``, or ``OUT/model`` of
``wsi-hcc train-patches``): every tissue tile scored by the classifier, mapped class by class.

Per slide, with the batch semantics of MIL bundles (a failed slide is a row with its reason; a rerun
skips slides this model already scored from the same file):

- ``OUT/<stem>.tiles.csv.gz``: one row per tile: ``x``, ``y`` (level-0 top-left), ``tile_size_level0``
  and ``p_<class>`` for every class;
- a row in ``OUT/predictions.csv``: per class the mean tile probability (``p_<class>``) and the
  fraction of tiles on which it is the top class (``frac_<class>``), the predicted label (highest
  mean), tiles, mpp and its source, and what the model's card only assumes (``model_assumptions``);
- ``OUT/<stem>.heatmap.png``: a panel per class and one of the top class, over the thumbnail;
- ``OUT/<stem>.geojson.gz``: QuPath tiles with every probability as a measurement, classified by
  their top class, and one region annotation per class where it is on top.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.models import MODEL_FOLDER_FORMAT, ModelCard, create_backbone, file_sha256, to_model_input
from wsi_hcc.pipelines.classify import ClassifyReport, classify_rows, no_tissue_line, slide_picture
from wsi_hcc.pipelines.cluster import LOCAL_WORKER, SAME_PATHS_HELP, run_on_cluster, worker_cached
from wsi_hcc.pipelines.tile import TilePlan, plan_tiles, run_tile, tile_task
from wsi_hcc.qupath.export import write_qupath_geojson
from wsi_hcc.store.feature_array import read_store_meta, store_records
from wsi_hcc.store.patch_store import TileReader, open_store
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.inputs import SlideTask
from wsi_hcc.utils.atomic import atomic_write_bytes, atomic_write_csv, fresh_partial_dir, publish_dir
from wsi_hcc.utils.devices import resolve_device
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.runs import SlideOutcome, StateFiles, one_line_reason, prepare_out_dir, write_manifest
from wsi_hcc.utils.versions import utc_now
from wsi_hcc.viz.slide_exports import class_geojson_features, class_maps_png, measurement_name
from wsi_hcc.viz.tile_table import TILE_TABLE_SUFFIX, write_tile_table

__all__ = ["is_patch_model", "run_classify_patches", "bundle_patch_classifier", "score_tiles"]

MODEL_KIND = "patch-classifier"


def is_patch_model(path: str | Path) -> bool:
    """Whether ``path`` is a model folder of a patch classifier (not a MIL bundle)."""
    try:
        card = json.loads((Path(path) / "card.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and card.get("format") == MODEL_FOLDER_FORMAT and card.get("kind") == MODEL_KIND


def bundle_patch_classifier(architecture: str, weights: str | Path, out_dir: str | Path, *,
                            classes: list[str] | None = None, target_mpp: float | None = None,
                            overwrite: bool = False):
    """A patch-classifier model folder from a weights file; returns the model (its card as written).

    ``classes`` names the outputs (then stated); ``target_mpp`` the resolution (then stated). A
    folder that is not empty is only replaced with ``overwrite`` (results made with it would no
    longer be recognised as made by this model).
    """
    from dataclasses import replace

    from wsi_hcc.models import save_model_folder

    out_dir = Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise WsiHccError(f"{out_dir}: already holds files; choose another --out, or pass --overwrite to replace "
                          "the model there")

    model = create_backbone(architecture, weights=weights)
    card = model.card
    source_sha256 = card.weights_sha256  # create_backbone hashed the file (or read the folder's card)
    if card.num_classes < 1:
        raise WsiHccError(f"{weights}: the weights have no classifier (a feature extractor); classify needs class "
                          "scores")
    if classes is not None:
        if len(classes) != card.num_classes:
            raise WsiHccError(f"--classes: {len(classes)} names for {card.num_classes} outputs of {weights}")
        card = replace(card, class_names=tuple(c.strip() for c in classes), class_names_source="stated")
    if target_mpp is not None:
        card = replace(card, target_mpp=float(target_mpp), mpp_source="stated")
    model.card = card
    released = "training_data" in card.extra  # a released file the registry knows: its card says what it learnt
    tmp = fresh_partial_dir(out_dir)
    save_model_folder(model, tmp, training={"kind": "real" if released else "not recorded",
                                            "data": card.extra.get("training_data", "not recorded"),
                                            "weights_file": str(Path(weights).resolve()),
                                            "weights_sha256": source_sha256})
    publish_dir(tmp, out_dir)
    return model


def run_classify_patches(inputs: list[str | Path], model_dir: str | Path, out_dir: str | Path, *,
                         stores_dir: str | Path | None = None, recursive: bool = False,
                         slide_mpp: float | None = None, overwrite: bool = False, workers: int = 1,
                         scheduler: str | None = None, device: str = "auto", batch_size: int = 64,
                         allow_resize: bool = False, progress: Progress | None = None) -> ClassifyReport:
    """Score every tile of every slide named by ``inputs`` with the patch classifier in ``model_dir``.

    ``progress`` hears two stages, ``"tile"`` and ``"classify"`` (on a cluster one, see ``run_classify``).
    Raises only for what stops the whole run (a bad model folder, an unwritable output).
    """
    out_dir, model_dir = Path(out_dir), Path(model_dir)
    prepare_out_dir(out_dir)
    stores_dir = Path(stores_dir) if stores_dir is not None else out_dir / "stores"
    progress = progress or silent_progress()
    folder_card = json.loads((model_dir / "card.json").read_text())
    architecture = folder_card["model_card"]["architecture"]
    learnt_from = (folder_card.get("training") or {}).get("kind", "not recorded")
    on_cluster = bool(scheduler) or workers > 1
    torch_device = resolve_device("cpu" if on_cluster else device)  # on a cluster the workers run the model
    model = create_backbone(architecture, weights=model_dir).eval().to(torch_device)
    card: ModelCard = model.card
    model_digest = file_sha256(model_dir / "card.json")
    started = utc_now()

    tile_config = TileConfig(target_mpp=card.target_mpp, tile_px=card.tile_px)
    write = lambda rows: _write_csv(out_dir / "predictions.csv", rows, card)  # noqa: E731

    def classify_slide(outcome: SlideOutcome) -> dict[str, Any]:
        return _classify_slide(outcome, stores_dir, out_dir, model, model_digest, learnt_from, allow_resize,
                               overwrite, batch_size, progress)

    if on_cluster:
        tasks, plan = plan_tiles(inputs, stores_dir, tile_config, recursive=recursive, slide_mpp=slide_mpp)
        chain = _PatchChain(plan, model_dir, model_digest, architecture, learnt_from, out_dir, allow_resize,
                            overwrite, batch_size, device)
        rows, cluster = run_on_cluster(
            chain, tasks, [model_dir], [out_dir, stores_dir],
            lambda task, reason: classify_slide(SlideOutcome(task.stem, str(task.path), "failed", reason)),
            write, workers, scheduler, progress)
        paths = [str(t.path) for t in tasks]
    else:
        progress.stage("tile")
        tiled = run_tile(inputs, stores_dir, tile_config, recursive=recursive, slide_mpp=slide_mpp,
                         overwrite=overwrite, progress=progress).outcomes
        progress.stage("classify")
        rows = classify_rows(tiled, lambda outcome: classify_slide(outcome) | {"worker": LOCAL_WORKER}, write,
                             progress)
        paths, cluster = [o.path for o in tiled], None
    write_manifest(out_dir / "classify-manifest.json", "classify", started,
                   [SlideOutcome(r["slide"], path, r["status"], r["reason"]) for r, path in zip(rows, paths)],
                   model={"path": str(model_dir.resolve()), "kind": MODEL_KIND, "card_sha256": model_digest,
                          "card": card.to_dict()},
                   stores_dir=str(stores_dir.resolve()), device=device if on_cluster else str(torch_device),
                   cluster=cluster)
    return ClassifyReport(out_dir, rows, out_dir / "predictions.csv")


@dataclass(frozen=True)
class _PatchChain:
    """One slide's tiling, then its scoring and exports (the GPU stage) on a cluster's worker, the
    model loaded once per worker."""

    plan: TilePlan
    model_dir: Path
    model_digest: str
    architecture: str
    learnt_from: str
    out_dir: Path
    allow_resize: bool
    overwrite: bool
    batch_size: int
    device: str
    stages: ClassVar[tuple[str, ...]] = ("tile", "classify")
    gpu_stage: ClassVar[str] = "classify"

    def run(self, stage: str, task: SlideTask, *earlier):
        if stage == "tile":
            return tile_task(self.plan, task, overwrite=self.overwrite)
        model = worker_cached(self.model_digest, self._load)
        tiled = earlier[0]
        row = _classify_slide(tiled, self.plan.out_dir, self.out_dir, model, self.model_digest, self.learnt_from,
                              self.allow_resize, self.overwrite, self.batch_size, silent_progress())
        return row, tiled.warnings

    def _load(self):
        if file_sha256(self.model_dir / "card.json") != self.model_digest:
            raise WsiHccError(f"{self.model_dir}: this worker sees another model there than the client; "
                              f"{SAME_PATHS_HELP}")
        return create_backbone(self.architecture, weights=self.model_dir).eval().to(resolve_device(self.device))


def _columns(card: ModelCard) -> list[str]:
    names = [n.replace(" ", "_") for n in card.class_names]
    return (["slide", "model_kind", "predicted_label", *[f"p_{n}" for n in names], *[f"frac_{n}" for n in names],
             "n_tiles", "slide_mpp", "mpp_source", "model_assumptions", "model_training_data", "status", "reason",
             "seconds", "worker"])


def _write_csv(path: Path, rows: list[dict[str, Any]], card: ModelCard) -> None:
    atomic_write_csv(path, _columns(card), rows, ignore_extra=True)


def _outputs(out_dir: Path, stem: str) -> tuple[Path, Path, Path]:
    return out_dir / f"{stem}{TILE_TABLE_SUFFIX}", out_dir / f"{stem}.heatmap.png", out_dir / f"{stem}.geojson.gz"


def _classify_slide(tiled: SlideOutcome, stores_dir: Path, out_dir: Path, model, model_digest: str,
                    learnt_from: str, allow_resize: bool, overwrite: bool, batch_size: int,
                    progress: Progress) -> dict[str, Any]:
    card: ModelCard = model.card
    row: dict[str, Any] = {"slide": tiled.stem, "model_kind": MODEL_KIND,
                           "model_assumptions": "; ".join(card.assumptions), "model_training_data": learnt_from}
    if tiled.status == "failed":
        return row | {"status": "failed", "reason": tiled.reason}
    store = stores_dir / f"{tiled.stem}.zarr"
    states = StateFiles(out_dir, ".classify.json")
    started = time.perf_counter()
    try:
        meta = read_store_meta(store)
        slide, spec = store_records(meta)
        row |= {"n_tiles": int(meta["n_tiles"]), "slide_mpp": round(slide.slide_mpp, 6),
                "mpp_source": slide.mpp_source}
        previous = None if overwrite else states.finished(tiled.stem, model_digest=model_digest,
                                                            fingerprint=slide.fingerprint)
        if previous is not None and all(p.is_file() for p in _outputs(out_dir, tiled.stem)):
            return previous["row"] | {"status": "skipped", "reason": "already done"}
        if row["n_tiles"] == 0:
            raise WsiHccError(no_tissue_line(tiled.path))
        probs = score_tiles(store, model, allow_resize=allow_resize, batch_size=batch_size, progress=progress)
        coords = np.asarray(open_store(store)["coords"][:], dtype=np.int64)
        _export(Path(slide.path), slide.slide_mpp, tiled.stem, coords, spec, probs, card, out_dir)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad slide never stops the batch
        return row | {"status": "failed", "reason": one_line_reason(tiled.path, exc)}
    top = probs.argmax(axis=1)
    mean = probs.mean(axis=0)
    for k, name in enumerate(card.class_names):
        row[measurement_name(name)] = round(float(mean[k]), 6)
        row["frac_" + name.replace(" ", "_")] = round(float((top == k).mean()), 6)
    row |= {"predicted_label": card.class_names[int(mean.argmax())], "status": "done", "reason": "",
            "seconds": round(time.perf_counter() - started, 3)}
    states.write(tiled.stem, {"status": "done", "row": row, "model_digest": model_digest,
                              "fingerprint": slide.fingerprint, "store": str(store)})
    return row


def score_tiles(store: Path, model, *, allow_resize: bool = False, batch_size: int = 64,
                progress: Progress | None = None) -> np.ndarray:
    """``(N, classes)`` softmax probabilities of every tile of ``store``.

    Tiles are decoded ahead of the model by the feature stage's tile feed (threads on the CPU,
    worker processes feeding a GPU). Tiles of another size than the card's input are refused
    unless ``allow_resize``: resizing would show the model another resolution than it learnt.
    """
    import torch

    from wsi_hcc.features.tile_feed import DECODE_UNIT, TileFeed, Unit
    from wsi_hcc.pipelines.features import default_decoders

    progress = progress or silent_progress()
    card: ModelCard = model.card
    reader = TileReader(store)
    tile_px = reader.shape[1]
    if tile_px != card.input_px and not allow_resize:
        raise WsiHccError(f"{store}: tiles are {tile_px} px but {card.architecture} takes {card.input_px} px "
                          f"(resizing changes the resolution it sees); tile at the card's size, or pass "
                          "--allow-resize")
    device = next(model.parameters()).device
    decoders = default_decoders(device)
    units = [Unit(0, start, min(start + DECODE_UNIT, len(reader))) for start in range(0, len(reader), DECODE_UNIT)]
    per_batch = max(1, batch_size // DECODE_UNIT)
    feed = TileFeed([store], [False], units, threads=decoders.get("decode_threads", 0),
                    processes=decoders.get("decode_processes", 0), max_held=per_batch,
                    pin_memory=device.type == "cuda")
    progress.steps_planned(len(reader))
    out, held = [], []

    def run_batch():
        tiles = torch.cat([d.tiles for d in held]).to(device, non_blocking=True)
        out.append(model(to_model_input(tiles, card)).softmax(dim=1).float().cpu().numpy())
        for decoded in held:  # .cpu() above waited for the model: the slots are free again
            feed.recycle(decoded)
            progress.steps_done(len(decoded.unit))
        held.clear()

    with feed, torch.inference_mode():
        for decoded in feed:
            if decoded.error is not None:
                raise WsiHccError(decoded.error)
            held.append(decoded)
            if len(held) == per_batch:
                run_batch()
        if held:
            run_batch()
    return np.concatenate(out)


def _export(slide_path: Path, slide_mpp: float, stem: str, coords: np.ndarray, spec, probs: np.ndarray,
            card: ModelCard, out_dir: Path) -> None:
    tiles_csv, heatmap, geojson = _outputs(out_dir, stem)
    write_tile_table(tiles_csv, coords, spec.tile_size_level0,
                     {measurement_name(n): probs[:, k] for k, n in enumerate(card.class_names)})
    boxes = spec.tile_boxes(coords)
    thumbnail, downsample, offset = slide_picture(slide_path, slide_mpp)
    atomic_write_bytes(heatmap, class_maps_png(thumbnail, downsample, boxes, probs, card.class_names, title=stem))
    write_qupath_geojson(geojson, class_geojson_features(boxes, probs, card.class_names, offset))
