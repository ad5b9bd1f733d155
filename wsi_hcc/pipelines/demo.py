"""``wsi-hcc demo``: the whole pathology chain on generated slides, in a few CPU minutes.

Into ``OUT`` (default ``./wsi-hcc-demo``)::

    cohort/      training slides (half with tumour), their stores with features, slides.csv
    training/    wsi-hcc train-mil's run: cross-validated metrics, ROC, the folds
    model/       the trained bundle: ``wsi-hcc classify SLIDES --model OUT/model`` works on any slide
    heldout/     slides the model never saw, with their ground-truth masks, and heldout.csv
    classify/    wsi-hcc classify's outputs for them: predictions.csv (with true_label), per slide
                 <stem>.heatmap.png and <stem>.geojson.gz (QuPath)
    figures/     per held-out slide its ground truth beside the tile maps, and the held-out ROC
    report.md    what was done and how well it worked, with the pictures

The backbone is the fixed colour/texture descriptor of ``wsi_hcc.mil.handcrafted`` (it carries
the synthetic tumour signal and costs nothing to run), so the demo shows the MIL, classify and
export stages working, not what a CNN learns. A rerun reuses every finished stage.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.mil.config import MilConfig
from wsi_hcc.pipelines.classify import ClassifyReport, run_classify
from wsi_hcc.pipelines.train_mil import run_mil_training, synthetic_cohort
from wsi_hcc.utils.atomic import atomic_write_bytes, fresh_partial_dir, publish_dir
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.runs import prepare_out_dir
from wsi_hcc.utils.versions import stack_versions, utc_now

__all__ = ["DemoReport", "run_demo", "DEMO_MIL_SETTINGS"]

DEMO_MIL_SETTINGS: dict[str, Any] = {
    "class_names": ["non_tumour", "tumour"], "grade_names": ["G1", "G2", "G3"],
    "model": {"name": "gated", "hidden": 64, "dropout": 0.0},
    "folds": 3, "validation_fraction": 0.25, "epochs": 40, "patience": 8, "lr": 1e-3, "weight_decay": 1e-4,
    "bootstrap": 200, "bundle": "best_fold", "seed": 0, "device": "cpu", "cpu_threads": 1,
}
_TRUTH_NAMES = {1: "tissue", 2: "tumour"}  # the synthetic mask's labels (MASK_LABELS; 0 is background)
HELDOUT_ROC_TITLE = "ROC, held-out test slides (never seen in training)"


@dataclass(frozen=True)
class DemoReport:
    out_dir: Path
    report_path: Path
    bundle_dir: Path
    classify: ClassifyReport
    cv_auc: float | None
    heldout_accuracy: float
    seconds: dict[str, float]


def run_demo(out_dir: str | Path = "wsi-hcc-demo", *, n_train: int = 24, n_heldout: int = 8, seed: int = 0,
             progress: Progress | None = None) -> DemoReport:
    """Generate, tile, embed, train, classify held-out slides and write ``OUT/report.md``.

    ``progress`` hears the four steps as messages, and the classification's stages."""
    from wsi_hcc.synth import write_synthetic_slide

    progress = progress or silent_progress()
    out_dir = Path(out_dir)
    prepare_out_dir(out_dir)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    progress.message(f"1/4 generating and tiling {n_train} training slides (half with tumour)")
    cohort = synthetic_cohort(out_dir / "cohort", n_slides=n_train, seed=seed)
    seconds["cohort"] = time.perf_counter() - started

    progress.message("2/4 training attention-MIL with patient-level cross-validation")
    mark = time.perf_counter()
    config = MilConfig(**DEMO_MIL_SETTINGS, stores=[str(cohort["stores"])], labels_csv=str(cohort["labels_csv"]))
    training = run_mil_training(config, out_dir / "training")
    bundle_dir = out_dir / "model"
    _publish_copy(training.bundle_dir, bundle_dir)
    seconds["train"] = time.perf_counter() - mark

    progress.message(f"3/4 classifying {n_heldout} held-out slides with {bundle_dir}")
    mark = time.perf_counter()
    heldout = out_dir / "heldout"
    truth = {}
    for i in range(n_heldout):
        stem, tumour = f"heldout{i:02d}", i % 2 == 0
        grade = 1 + (i // 2) % 3 if tumour else None
        path, mask = heldout / f"{stem}.svs", heldout / f"{stem}.mask.png"
        if not (path.exists() and mask.exists()):  # a rerun reuses them
            write_synthetic_slide(path, size_px=(1536, 1024), mpp=0.5, seed=10_000 + seed * 1000 + i,
                                  tumour=tumour, grade=grade, tissue_fraction=0.7)
        truth[stem] = ("tumour" if tumour else "non_tumour", f"G{grade}" if grade else "", mask)
    atomic_write_bytes(heldout / "heldout.csv", ("slide,patient,label,grade\n" + "".join(
        f"{stem},{stem},{label},{grade}\n" for stem, (label, grade, _) in truth.items())).encode())
    classified = run_classify([heldout], bundle_dir, out_dir / "classify", labels_csv=heldout / "heldout.csv",
                              device="cpu", progress=progress)
    seconds["classify"] = time.perf_counter() - mark

    progress.message("4/4 writing the report")
    figures = out_dir / "figures"
    figures.mkdir(exist_ok=True)
    done = [r for r in classified.rows if r["status"] in ("done", "skipped")]
    _truth_pictures(figures, out_dir / "classify" / "stores", bundle_dir,
                    {r["slide"]: truth[r["slide"]][2] for r in done})
    labels = [int(r["true_label"] == "tumour") for r in done]
    scores = [float(r["p_hcc"]) for r in done]
    from wsi_hcc.mil.metrics import roc_png

    if len(set(labels)) == 2:
        atomic_write_bytes(figures / "heldout_roc.png", roc_png({"held-out slides": (labels, scores)},
                                                                title=HELDOUT_ROC_TITLE))
    accuracy = float(np.mean([r["predicted_label"] == r["true_label"] for r in done])) if done else 0.0
    cv_auc = training.metrics["pooled"]["label"]["roc_auc"]
    seconds["total"] = time.perf_counter() - started
    report_path = out_dir / "report.md"
    atomic_write_bytes(report_path, _report_markdown(out_dir, training.metrics, classified, accuracy, seconds,
                                                     n_train).encode())
    return DemoReport(out_dir, report_path, bundle_dir, classified, cv_auc, accuracy, seconds)


def _publish_copy(source: Path, final: Path) -> None:
    tmp = fresh_partial_dir(final)
    shutil.copytree(source, tmp, dirs_exist_ok=True)
    publish_dir(tmp, final)


def _truth_pictures(figures: Path, stores_dir: Path, bundle_dir: Path, masks: dict[str, Path]) -> None:
    """``figures/<stem>.compare.png`` per classified slide: its ground-truth mask beside the tile
    probability and attention maps, all at the heatmap's size, the true tumour outlined on each."""
    from PIL import Image

    from wsi_hcc.mil.bundle import load_mil_bundle
    from wsi_hcc.pipelines.classify import _predict, slide_picture
    from wsi_hcc.store.feature_array import read_store_meta, store_records
    from wsi_hcc.viz.slide_exports import truth_heatmap_png

    bundle = load_mil_bundle(bundle_dir)
    for stem, mask_path in masks.items():
        slide, spec = store_records(read_store_meta(stores_dir / f"{stem}.zarr"))
        tiles, _ = _predict(stores_dir / f"{stem}.zarr", spec, bundle)
        thumbnail, downsample, _ = slide_picture(Path(slide.path), slide.slide_mpp)
        with Image.open(mask_path) as mask:
            truth = np.asarray(mask)
        atomic_write_bytes(figures / f"{stem}.compare.png", truth_heatmap_png(
            thumbnail, downsample, tiles, "tumour", truth, _TRUTH_NAMES, title=stem))


def _grade_lines(grade: dict | None) -> list[str]:
    """The cross-validated grade confusion in words (how many tumour slides got their grade) and its picture."""
    if not grade or not grade.get("n_slides"):
        return []
    confusion = np.asarray(grade["confusion_matrix"])
    kappa = grade.get("quadratic_weighted_kappa")
    return [f"Grade, on the {grade['n_slides']} tumour slides: right for **{int(np.trace(confusion))} of "
            f"{int(confusion.sum())}** (quadratic-weighted kappa {_fmt(kappa)}); rows are the true grade:", "",
            "![cross-validated grade confusion](training/grade_confusion.png)", ""]


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _report_markdown(out_dir: Path, metrics: dict, classified: ClassifyReport, accuracy: float,
                     seconds: dict[str, float], n_train: int) -> str:
    pooled = metrics["pooled"]["label"]
    low, high = pooled["roc_auc_ci95"]
    lines = [
        "# wsi-hcc demo", "",
        f"Made {utc_now()} with wsi-hcc {stack_versions()['wsi-hcc']} in {seconds['total']:.0f} s "
        f"(cohort {seconds['cohort']:.0f} s, training {seconds['train']:.0f} s, classify {seconds['classify']:.0f} s).",
        "", "Synthetic H&E slides (pink tissue with nuclei; tumour slides hold a region of larger, darker, "
        "crowded nuclei) were tiled at 1 µm/px into 32 px tiles, embedded with a fixed colour/texture "
        "descriptor, and an attention-MIL model learned HCC-vs-not from slide labels alone.", "",
        "**This model is for the demo only.** It learnt from generated slides (its card says "
        "`training_data: synthetic`); on a real slide its calls mean nothing, and `classify` says so.", "",
        "## Cross-validated training", "",
        f"{n_train} slides, {len(metrics['per_fold'])} patient-level folds: pooled held-out ROC AUC "
        f"**{_fmt(pooled['roc_auc'])}** (95% CI {_fmt(low)}-{_fmt(high)}), balanced accuracy "
        f"{_fmt(pooled['balanced_accuracy'])}. Details: `training/metrics.json`.", "",
        "![cross-validated ROC](training/roc.png)", "",
        *_grade_lines(metrics["pooled"].get("grade")),
        "## Held-out slides, scored with `wsi-hcc classify --model model`", "",
        f"Accuracy **{accuracy:.3f}** on {len(classified.rows)} slides the model never saw "
        "(`classify/predictions.csv`, with each slide's `true_label`).", "",
    ]
    if (out_dir / "figures" / "heldout_roc.png").exists():
        lines += ["![held-out ROC](figures/heldout_roc.png)", ""]
    graded = [r for r in classified.rows if r["status"] != "failed" and r.get("true_grade")]
    right = sum(r.get("predicted_grade", "") == r["true_grade"] for r in graded)
    lines += ["Grades (G1-G3: nuclei larger, darker and more crowded) are predicted for every slide; they "
              f"mean something only where the slide is called tumour: right for {right} of {len(graded)} "
              "held-out tumour slides.", "",
              "| slide | truth | p(tumour) | predicted | QuPath |", "|---|---|---|---|---|"]
    pictures = []
    for r in classified.rows:
        stem = r["slide"]
        truth = " ".join(x for x in (r.get("true_label", ""), r.get("true_grade", "")) if x)
        if r["status"] == "failed":
            lines.append(f"| {stem} | {truth} | - | failed: {r['reason']} | |")
            continue
        called = r["predicted_label"] + (f" {r['predicted_grade']}" if r["predicted_label"] == "tumour" else "")
        lines.append(f"| {stem} | {truth} | {float(r['p_hcc']):.3f} | {called} | "
                     f"[{stem}.geojson.gz](classify/{stem}.geojson.gz) |")
        pictures += [f"**{stem}** (truth: {truth}; called: {called})", "",
                     f"![{stem}: ground truth, tile probability, attention](figures/{stem}.compare.png)", ""]
    lines += ["", "Each slide below: its ground truth, then the probability `classify` gives each tile scored alone, "
              "then the attention of the slide's call (`classify/<slide>.heatmap.png` without the truth), all at "
              "one scale, the true tumour outlined in cyan.", "", *pictures]
    lines += ["## Next", "",
              "- Score your own slides: `wsi-hcc classify SLIDES... --model " + str(out_dir / "model") +
              " --out results/` (this bundle knows only synthetic slides; train one on yours with "
              "`wsi-hcc tile`, `wsi-hcc features`, `wsi-hcc train-mil`).",
              "- Open a slide in QuPath and drag its `.geojson.gz` onto it: tiles carry `p_HCC` and `attention` "
              "as measurements; the tumour regions are editable annotations.", ""]
    return "\n".join(lines)
