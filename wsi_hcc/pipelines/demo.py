"""``wsi-hcc demo``: the whole pathology chain on generated slides, in a few CPU minutes.

Into ``OUT`` (default ``./wsi-hcc-demo``)::

    cohort/      training slides (half with tumour), their stores with features, slides.csv
    training/    wsi-hcc train-mil's run: cross-validated metrics, ROC, the folds
    model/       the trained bundle: ``wsi-hcc classify SLIDES --model OUT/model`` works on any slide
    heldout/     slides the model never saw, with their ground-truth masks, and heldout.csv
    classify/    wsi-hcc classify's outputs for them: predictions.csv (with true_label), per slide
                 <stem>.heatmap.png and <stem>.geojson.gz (QuPath)
    figures/     ground-truth pictures and the held-out ROC
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
_TRUTH_COLOURS = np.array([[255, 255, 255], [236, 170, 200], [200, 30, 40]], dtype=np.uint8)  # MASK_LABELS order


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
    for stem, (_, _, mask_path) in truth.items():
        atomic_write_bytes(figures / f"{stem}.truth.png", _truth_png(mask_path))
    done = [r for r in classified.rows if r["status"] in ("done", "skipped")]
    labels = [int(r["true_label"] == "tumour") for r in done]
    scores = [float(r["p_hcc"]) for r in done]
    from wsi_hcc.mil.metrics import roc_png

    if len(set(labels)) == 2:
        atomic_write_bytes(figures / "heldout_roc.png", roc_png({"held-out slides": (labels, scores)}))
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


def _truth_png(mask_path: Path) -> bytes:
    import io

    from PIL import Image

    mask = np.asarray(Image.open(mask_path))
    buffer = io.BytesIO()
    Image.fromarray(_TRUTH_COLOURS[np.clip(mask, 0, 2)]).save(buffer, format="PNG")
    return buffer.getvalue()


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
        "## Held-out slides, scored with `wsi-hcc classify --model model`", "",
        f"Accuracy **{accuracy:.3f}** on {len(classified.rows)} slides the model never saw "
        "(`classify/predictions.csv`, with each slide's `true_label`).", "",
    ]
    if (out_dir / "figures" / "heldout_roc.png").exists():
        lines += ["![held-out ROC](figures/heldout_roc.png)", ""]
    lines += ["Grades (G1-G3: nuclei larger, darker and more crowded) are predicted for every slide; they "
              "mean something only where the slide is called tumour.", "",
              "| slide | truth | p(tumour) | predicted | ground-truth mask (red: tumour) "
              "| tile probability and attention | QuPath |",
              "|---|---|---|---|---|---|---|"]
    for r in classified.rows:
        stem = r["slide"]
        truth = " ".join(x for x in (r.get("true_label", ""), r.get("true_grade", "")) if x)
        if r["status"] == "failed":
            lines.append(f"| {stem} | {truth} | - | failed: {r['reason']} | | | |")
            continue
        called = r["predicted_label"] + (f" {r['predicted_grade']}" if r["predicted_label"] == "tumour" else "")
        lines.append(f"| {stem} | {truth} | {float(r['p_hcc']):.3f} | {called} | "
                     f"![truth](figures/{stem}.truth.png) | ![heatmap](classify/{stem}.heatmap.png) | "
                     f"[{stem}.geojson.gz](classify/{stem}.geojson.gz) |")
    lines += ["", "## Next", "",
              "- Score your own slides: `wsi-hcc classify SLIDES... --model " + str(out_dir / "model") +
              " --out results/` (this bundle knows only synthetic slides; train one on yours with "
              "`wsi-hcc tile`, `wsi-hcc features`, `wsi-hcc train-mil`).",
              "- Open a slide in QuPath and drag its `.geojson.gz` onto it: tiles carry `p_HCC` and `attention` "
              "as measurements; the tumour regions are editable annotations.", ""]
    return "\n".join(lines)
