"""Batch scoring with a model bundle: ``wsi-hcc classify``.

Slides go through four stages, each with the batch semantics of ``wsi-hcc tile`` (a failed slide is
reported and the batch goes on; finished work is skipped on a rerun):

1. tile: into ``stores_dir`` (default ``OUT/stores``) with the tiling the bundle was trained on;
   stores already made that way are reused;
2. features: with the bundle's backbone; features of this model already in a store are reused,
   another model's are replaced;
3. MIL: slide probabilities, grade, attention and per-tile probabilities;
4. export: ``OUT/<stem>.heatmap.png``, ``OUT/<stem>.geojson.gz`` (QuPath) and ``OUT/<stem>.tiles.csv.gz``
   (each tile's class probabilities, attention and grade probabilities: what ``wsi-hcc view`` draws).

With ``scheduler`` (a dask.distributed address) or ``workers`` > 1 (a local cluster) each slide's
whole chain runs on the cluster's workers instead (``wsi_hcc.pipelines.cluster``), with the same
outputs; the ``worker`` column names the worker that scored the slide (``local`` without a cluster).

``OUT/predictions.csv`` has one row per slide, failures included (status and reason), rewritten
after every slide; ``OUT/<stem>.classify.json`` is the slide's state (its row, the bundle's digest,
the slide's fingerprint), so a killed run resumes at the first unfinished slide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.mil.bundle import MilBundle, SlidePrediction, load_mil_bundle
from wsi_hcc.models import file_sha256
from wsi_hcc.pipelines.cluster import LOCAL_WORKER, SAME_PATHS_HELP, run_on_cluster, worker_cached
from wsi_hcc.pipelines.features import run_features
from wsi_hcc.pipelines.tile import TilePlan, plan_tiles, run_tile, tile_task
from wsi_hcc.qupath.export import slide_bounds_offset, write_qupath_geojson
from wsi_hcc.records import TileSpec
from wsi_hcc.store.feature_array import read_store_meta, store_records
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.inputs import SlideTask
from wsi_hcc.training.datasets import read_slide_labels
from wsi_hcc.utils.atomic import atomic_write_bytes, atomic_write_csv
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.runs import SlideOutcome, StateFiles, one_line_reason, prepare_out_dir, write_manifest
from wsi_hcc.utils.versions import utc_now
from wsi_hcc.viz.slide_exports import TilePredictions, measurement_name, slide_geojson_features, slide_heatmap_png
from wsi_hcc.viz.tile_table import TILE_TABLE_SUFFIX, write_tile_table

__all__ = ["ClassifyReport", "run_classify", "CSV_COLUMNS", "classify_rows", "slide_picture"]

log = logging.getLogger(__name__)

CSV_COLUMNS = ["slide", "p_hcc", "predicted_label", "n_tiles", "slide_mpp", "mpp_source", "status", "reason",
               "seconds", "seconds_tile", "seconds_features", "seconds_mil", "seconds_export", "model_kind",
               "model_training_data", "worker"]
_HEATMAP_LONG_SIDE_PX = 1024


@dataclass(frozen=True)
class ClassifyReport:
    out_dir: Path
    rows: list[dict[str, Any]]
    predictions_csv: Path

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "failed"]


def run_classify(inputs: list[str | Path], bundle_dir: str | Path, out_dir: str | Path, *,
                 stores_dir: str | Path | None = None, labels_csv: str | Path | None = None,
                 region_threshold: float = 0.5, recursive: bool = False, slide_mpp: float | None = None,
                 overwrite: bool = False, workers: int = 1, scheduler: str | None = None, device: str = "auto",
                 batch_size: int | None = None,
                 progress: Progress | None = None) -> ClassifyReport:
    """Score every slide named by ``inputs`` with the bundle in ``bundle_dir``; outputs into ``out_dir``.

    ``progress`` hears three stages: ``"tile"``, ``"features"``, ``"classify"`` (on a cluster one,
    ``"cluster"``: see ``wsi_hcc.pipelines.cluster.run_chains``).
    Raises only for what stops the whole run (bad bundle, unwritable output).
    """
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir)
    stores_dir = Path(stores_dir) if stores_dir is not None else out_dir / "stores"
    progress = progress or silent_progress()
    bundle = load_mil_bundle(bundle_dir)
    backbone_model = bundle.create_backbone()  # fails now, with one line, if the bundle cannot make features
    bundle_digest = file_sha256(Path(bundle_dir) / "card.json")
    truth = _true_labels(labels_csv, bundle.card.raw.get("class_map") or {})
    started = utc_now()

    write = lambda rows: _write_csv(out_dir / "predictions.csv", rows, bundle)  # noqa: E731
    backbone = dict(bundle.card.backbone)
    if scheduler or workers > 1:
        tasks, plan = plan_tiles(inputs, stores_dir, TileConfig(**bundle.tile_config()), recursive=recursive,
                                 slide_mpp=slide_mpp)
        chain = _MilChain(plan, Path(bundle_dir), bundle_digest, out_dir, region_threshold, overwrite, device,
                          batch_size)

        def failed_row(task: SlideTask, reason: str) -> dict[str, Any]:
            return _classify_one(SlideOutcome(task.stem, str(task.path), "failed", reason), None, stores_dir,
                                 out_dir, bundle, bundle_digest, region_threshold, overwrite)

        rows, cluster = run_on_cluster(chain, tasks, [Path(bundle_dir)], [out_dir, stores_dir], failed_row,
                                   lambda rows: write(_with_truth(rows, truth)), workers, scheduler, progress)
        rows, paths = _with_truth(rows, truth), [str(t.path) for t in tasks]
    else:
        rows, paths = _classify_here(inputs, bundle, backbone_model, bundle_digest, stores_dir, out_dir, truth,
                                     write, region_threshold=region_threshold, recursive=recursive,
                                     slide_mpp=slide_mpp, overwrite=overwrite, device=device, batch_size=batch_size,
                                     progress=progress)
        cluster = None
    write_manifest(out_dir / "classify-manifest.json", "classify", started,
                   [SlideOutcome(r["slide"], path, r["status"], r["reason"]) for r, path in zip(rows, paths)],
                   bundle={"path": str(Path(bundle_dir).resolve()), "card_sha256": bundle_digest,
                           "class_names": list(bundle.card.class_names),
                           "grade_names": list(bundle.card.grade_names or ()),
                           "features": dict(bundle.card.features), "backbone": backbone},
                   stores_dir=str(stores_dir.resolve()), region_threshold=region_threshold, device=device,
                   cluster=cluster)
    return ClassifyReport(out_dir, rows, out_dir / "predictions.csv")


def _classify_here(inputs, bundle: MilBundle, backbone_model, bundle_digest: str, stores_dir: Path, out_dir: Path,
                   truth, write, *, region_threshold: float, recursive: bool, slide_mpp: float | None,
                   overwrite: bool, device: str, batch_size: int | None,
                   progress: Progress) -> tuple[list[dict[str, Any]], list[str]]:
    """The run in this process, stage after stage over all slides; its rows and the slides' paths."""
    progress.stage("tile")
    tiled = run_tile(inputs, stores_dir, TileConfig(**bundle.tile_config()), recursive=recursive,
                     slide_mpp=slide_mpp, overwrite=overwrite, progress=progress).outcomes
    stores = [stores_dir / f"{o.stem}.zarr" for o in tiled if o.status != "failed"]
    backbone = dict(bundle.card.backbone)
    progress.stage("features")
    featured = run_features(stores, stores_dir, backbone["name"], weights=bundle.backbone_path,
                            device=device, batch_size=batch_size, dtype=backbone["feature_dtype"],
                            replace_other=True, allow_resize=True, model=backbone_model,  # as in training
                            progress=progress).outcomes if stores else ()
    features_of = {o.stem: o for o in featured}

    def classify_one(outcome: SlideOutcome) -> dict[str, Any]:
        row = _classify_one(outcome, features_of.get(outcome.stem), stores_dir, out_dir, bundle, bundle_digest,
                            region_threshold, overwrite)
        return _with_truth([row], truth)[0] | {"worker": LOCAL_WORKER}

    progress.stage("classify")
    return classify_rows(tiled, classify_one, write, progress), [o.path for o in tiled]


def _with_truth(rows: list[dict[str, Any]], truth: dict[str, tuple[str, str]] | None) -> list[dict[str, Any]]:
    if truth is None:
        return rows
    return [row | dict(zip(("true_label", "true_grade"), truth.get(row["slide"], ("", "")))) for row in rows]


@dataclass(frozen=True)
class _MilChain:
    """One slide's tile, features and classify (MIL and exports) on a cluster's worker, the bundle
    loaded once per worker; the features are the GPU stage."""

    plan: TilePlan
    bundle_dir: Path
    bundle_digest: str
    out_dir: Path
    region_threshold: float
    overwrite: bool
    device: str
    batch_size: int | None
    stages: ClassVar[tuple[str, ...]] = ("tile", "features", "classify")
    gpu_stage: ClassVar[str] = "features"

    def run(self, stage: str, task: SlideTask, *earlier):
        if stage == "tile":
            return tile_task(self.plan, task, overwrite=self.overwrite)
        bundle, backbone_model = worker_cached(self.bundle_digest, self._load)
        tiled, stores_dir = earlier[0], self.plan.out_dir
        if stage == "features":
            if tiled.status == "failed":
                return None
            backbone = dict(bundle.card.backbone)
            return run_features([stores_dir / f"{tiled.stem}.zarr"], stores_dir, backbone["name"],
                                weights=bundle.backbone_path, device=self.device, batch_size=self.batch_size,
                                dtype=backbone["feature_dtype"], replace_other=True, allow_resize=True,
                                model=backbone_model, manifest=False).outcomes[0]
        row = _classify_one(tiled, earlier[1], stores_dir, self.out_dir, bundle, self.bundle_digest,
                            self.region_threshold, self.overwrite)
        return row, tiled.warnings

    def _load(self):
        if file_sha256(self.bundle_dir / "card.json") != self.bundle_digest:
            raise WsiHccError(f"{self.bundle_dir}: this worker sees another model there than the client; "
                              f"{SAME_PATHS_HELP}")
        bundle = load_mil_bundle(self.bundle_dir)
        return bundle, bundle.create_backbone()


def no_tissue_line(slide: str | Path) -> str:
    """Why a slide with no tissue tiles cannot be classified, and what to look at."""
    return (f"{slide}: no tissue tiles to classify (tissue detection kept none at the model's tiling); look at "
            "the slide's QC picture (wsi-hcc tile writes <stem>.qc.png) to see why")


def classify_rows(tiled: Sequence[SlideOutcome], classify_one: Callable[[SlideOutcome], dict[str, Any]],
                  write: Callable[[list[dict[str, Any]]], None], progress: Progress) -> list[dict[str, Any]]:
    """One row per tiled slide, each a progress item; ``write`` gets the rows after every slide, so a
    killed run keeps those it finished (and an empty run still writes its header)."""
    rows: list[dict[str, Any]] = []
    for position, outcome in enumerate(tiled):
        progress.item_started(outcome.stem, position, len(tiled))
        rows.append(classify_one(outcome))
        write(rows)
        progress.item_finished()
    if not rows:
        write(rows)
    return rows


def _true_labels(labels_csv: str | Path | None, class_map: dict[str, str]) -> dict[str, tuple[str, str]] | None:
    """Each slide's (label, grade) from a label CSV, its labels in the model's words (the class_map it
    was trained with), so ``true_label`` compares with ``predicted_label``."""
    if labels_csv is None:
        return None
    return {row.slide: (class_map.get(row.label, row.label), row.grade or "") for row in read_slide_labels(labels_csv)}


def _states(out_dir: Path) -> StateFiles:
    return StateFiles(out_dir, ".classify.json")


def _outputs(out_dir: Path, stem: str) -> tuple[Path, Path, Path]:
    return out_dir / f"{stem}.heatmap.png", out_dir / f"{stem}.geojson.gz", out_dir / f"{stem}{TILE_TABLE_SUFFIX}"


def _previous_row(out_dir: Path, stem: str, bundle_digest: str, fingerprint: str | None) -> dict | None:
    """The row of a slide this bundle already classified from this very file, with its outputs present."""
    state = _states(out_dir).finished(stem, bundle_digest=bundle_digest, fingerprint=fingerprint)
    if state is not None and all(p.is_file() for p in _outputs(out_dir, stem)):
        return state["row"]
    return None


def _classify_one(tiled: SlideOutcome, featured: SlideOutcome | None, stores_dir: Path, out_dir: Path,
                  bundle: MilBundle, bundle_digest: str, region_threshold: float, overwrite: bool) -> dict[str, Any]:
    row = {c: "" for c in CSV_COLUMNS} | {"slide": tiled.stem, "seconds_tile": _seconds(tiled), "model_kind": "mil",
                                          "model_training_data": bundle.card.training_data.get("kind", "not recorded")}
    for failed in (tiled, featured):
        if failed is not None and failed.status == "failed":
            return row | {"status": "failed", "reason": failed.reason}
    row["seconds_features"] = _seconds(featured)
    store = stores_dir / f"{tiled.stem}.zarr"
    try:
        meta = read_store_meta(store)
        slide, spec = store_records(meta)
        row |= {"n_tiles": int(meta["n_tiles"]), "slide_mpp": round(slide.slide_mpp, 6), "mpp_source": slide.mpp_source}
        if not overwrite:
            previous = _previous_row(out_dir, tiled.stem, bundle_digest, slide.fingerprint)
            if previous is not None:
                return previous | {"status": "skipped", "reason": "already done"}
        if row["n_tiles"] == 0:
            raise WsiHccError(no_tissue_line(tiled.path))
        started = time.perf_counter()
        tiles, prediction = _predict(store, spec, bundle)
        row["seconds_mil"] = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        _export(Path(slide.path), slide.slide_mpp, tiled.stem, tiles, bundle, out_dir, region_threshold)
        _write_tiles(out_dir, tiled.stem, store, spec, tiles, bundle)
        row["seconds_export"] = round(time.perf_counter() - started, 3)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad slide never stops the batch
        log.debug("%s failed", tiled.path, exc_info=True)
        return row | {"status": "failed", "reason": one_line_reason(tiled.path, exc)}
    row |= _prediction_columns(prediction, bundle) | {"status": "done"}
    row["seconds"] = round(sum(float(row[k] or 0) for k in ("seconds_tile", "seconds_features", "seconds_mil",
                                                            "seconds_export")), 3)
    _states(out_dir).write(tiled.stem, {"status": "done", "row": row, "bundle_digest": bundle_digest,
                                        "fingerprint": slide.fingerprint, "store": str(store)})
    return row


def _seconds(outcome: SlideOutcome | None) -> float:
    if outcome is None or outcome.status != "done":
        return 0.0
    return round(float(outcome.seconds.get("total", 0.0)), 3)


def _predict(store: Path, spec: TileSpec, bundle: MilBundle) -> tuple[TilePredictions, SlidePrediction]:
    from wsi_hcc.store.patch_store import open_store

    group = open_store(store)
    coords = np.asarray(group["coords"][:], dtype=np.int64)
    prediction = bundle.predict(np.asarray(group["features"][:], dtype=np.float32))
    tiles = TilePredictions(spec.tile_boxes(coords), prediction.tile_label_probs[:, 1],
                            prediction.attention, prediction.tile_grade_probs)
    return tiles, prediction


def slide_picture(slide_path: Path, slide_mpp: float) -> tuple[np.ndarray, float, tuple[float, float]]:
    """The thumbnail a heatmap is drawn on (long side about 1024 px), its level-0 px per pixel, and the
    offset QuPath shifts the slide's objects by."""
    from wsi_hcc.slide.readers import open_slide
    from wsi_hcc.slide.thumbnail import read_thumbnail

    reader = open_slide(slide_path)
    try:
        thumbnail_mpp = slide_mpp * max(1.0, max(reader.dimensions) / _HEATMAP_LONG_SIDE_PX)
        thumbnail, downsample = read_thumbnail(reader, slide_mpp, thumbnail_mpp)
        return thumbnail, downsample, slide_bounds_offset(reader.properties)
    finally:
        reader.close()


def _export(slide_path: Path, slide_mpp: float, stem: str, tiles: TilePredictions, bundle: MilBundle,
            out_dir: Path, region_threshold: float) -> None:
    heatmap_path, geojson_path, _ = _outputs(out_dir, stem)
    thumbnail, downsample, offset = slide_picture(slide_path, slide_mpp)
    class_names = bundle.card.class_names
    atomic_write_bytes(heatmap_path, slide_heatmap_png(thumbnail, downsample, tiles, class_names[-1], title=stem))
    write_qupath_geojson(geojson_path, slide_geojson_features(tiles, class_names, bundle.card.grade_names or None,
                                                              region_threshold, offset))


def _write_tiles(out_dir: Path, stem: str, store: Path, spec: TileSpec, tiles: TilePredictions,
                 bundle: MilBundle) -> None:
    """The tile table: ``p_<class>`` (two classes: 1 - p and p), ``attention``, ``p_<grade>``."""
    from wsi_hcc.store.patch_store import open_store

    negative, positive = (measurement_name(n) for n in bundle.card.class_names)
    scores = {negative: 1.0 - tiles.p_positive, positive: tiles.p_positive, "attention": tiles.attention}
    for g, name in enumerate(bundle.card.grade_names or ()):
        if tiles.grade_probs is not None:
            scores.setdefault(measurement_name(name), tiles.grade_probs[:, g])
    write_tile_table(_outputs(out_dir, stem)[2], open_store(store)["coords"][:], spec.tile_size_level0, scores)


def _prediction_columns(prediction: SlidePrediction, bundle: MilBundle) -> dict[str, Any]:
    columns = {"p_hcc": round(float(prediction.label_probs[1]), 6), "predicted_label": prediction.label}
    for g, name in enumerate(bundle.card.grade_names):
        columns[f"p_{name}"] = round(float(prediction.grade_probs[g]), 6)
    if prediction.grade is not None and prediction.label == bundle.card.class_names[-1]:
        columns["predicted_grade"] = prediction.grade  # a grade only for a slide called tumour (p_G* stay)
    return columns


def _write_csv(path: Path, rows: list[dict[str, Any]], bundle: MilBundle) -> None:
    grades = bundle.card.grade_names
    columns = CSV_COLUMNS[:3] + [f"p_{g}" for g in grades] + (["predicted_grade"] if grades else []) + CSV_COLUMNS[3:]
    if any("true_label" in r for r in rows):
        columns[1:1] = ["true_label"] + (["true_grade"] if grades else [])
    atomic_write_csv(path, columns, rows, ignore_extra=True)
