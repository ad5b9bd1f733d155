"""A training run on a labelled cohort: split, train, evaluate held-out cases, explain them, write the run folder.

The run folder (published atomically) holds ``model/`` (``classify_bundle``), ``metrics.json``
(held-out metrics, Grad-CAM energy per region averaged over the held-out cases, the training
summary, config, cohort description, versions), ``predictions.csv`` (every case, its split, label
and class probabilities), ``cam_example/`` (the first held-out positive case: CAM NIfTI, crop
channels, PNG overlays) and, for the graph model on MVI, ``nomogram.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.cam import cam_energy, grad_cam, write_cam
from wsi_hcc.radiology.classify_bundle import save_classifier
from wsi_hcc.radiology.classify_train import ClassifierModel, TrainConfig, evaluate, train_classifier
from wsi_hcc.radiology.cohort import CohortCase
from wsi_hcc.utils.atomic import atomic_write_bytes, atomic_write_json, csv_bytes, fresh_partial_dir, publish_dir
from wsi_hcc.utils.progress import Progress
from wsi_hcc.utils.runs import provenance

__all__ = ["split_cases", "cam_summary", "run_training"]


def split_cases(cases: Sequence[CohortCase], task: str, test_fraction: float, seed: int
                ) -> tuple[list[CohortCase], list[CohortCase]]:
    """A split stratified by label (scikit-learn), reproducible from ``seed``.

    When some patient has several cases, the split keeps each patient's cases on one side
    (``StratifiedGroupKFold``, the first of ``round(1 / test_fraction)`` folds held out, so the
    held-out share is approximate); otherwise every case is its own patient (``train_test_split``).
    """
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    if not 0 < test_fraction < 1:
        raise WsiHccError(f"test fraction {test_fraction} must be between 0 and 1")
    labels = [case.label(task) for case in cases]
    patients = [case.patient or case.case_id for case in cases]
    if len(set(patients)) < len(cases):
        n_folds = max(2, round(1 / test_fraction))
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        try:
            train, test = next(splitter.split(np.zeros(len(cases)), labels, groups=patients))
        except ValueError as exc:
            raise WsiHccError(f"cannot split {len(set(patients))} patients into {n_folds} folds by {task} label "
                              f"({exc}); give more patients or a larger --test-fraction") from None
        return [cases[i] for i in sorted(train)], [cases[i] for i in sorted(test)]
    try:
        train, test = train_test_split(list(range(len(cases))), test_size=test_fraction, stratify=labels,
                                       random_state=seed)
    except ValueError as exc:
        raise WsiHccError(f"cannot split {len(cases)} cases by {task} label ({exc}); give more cases") from None
    return [cases[i] for i in sorted(train)], [cases[i] for i in sorted(test)]


def cam_summary(model: ClassifierModel, cases: Sequence[CohortCase], positive_only: bool = True) -> dict:
    """Grad-CAM energy per region (tumour, ring, far liver, outside) averaged over ``cases``
    (the positive ones for binary tasks when ``positive_only``)."""
    binary = len(model.classes) == 2
    chosen = [c for c in cases if not (binary and positive_only) or c.label(model.card["task"]) == 1]
    per_case = []
    for case in chosen:
        cam, _ = grad_cam(model, case.crop)
        per_case.append(cam_energy(cam, case.crop.regions(outside=True)))
    if not per_case:
        return {"cases": 0}
    regions = list(per_case[0])
    summary = {"cases": len(per_case), "class": model.classes[1] if binary else "predicted"}
    for key in ("fraction", "mean_per_voxel"):
        summary[key] = {r: float(np.mean([e[r][key] for e in per_case])) for r in regions}
    ring, liver = (np.array([e[r]["mean_per_voxel"] for e in per_case]) for r in ("ring", "liver"))
    summary["cases_ring_above_liver"] = int((ring > liver).sum())
    return summary


def _predictions_csv(model: ClassifierModel, rows: list[tuple[str, CohortCase, np.ndarray]]) -> bytes:
    task = model.card["task"]
    return csv_bytes(["case", "split", "label", *[f"p_{c}" for c in model.classes]],
                     [[case.case_id, split, case.label(task), *[f"{p:.6f}" for p in probabilities]]
                      for split, case, probabilities in rows], lineterminator="\r\n")


def run_training(config: TrainConfig, cases: Sequence[CohortCase], out_dir: str | Path, test_fraction: float = 0.3,
                 cohort: dict | None = None, progress: Progress | None = None) -> dict:
    """Split ``cases``, train, evaluate and explain the held-out cases, write the run folder; returns metrics.json's
    content."""
    from wsi_hcc.radiology.classify_train import predict_proba
    from wsi_hcc.radiology.graph_nomogram import LogisticNomogram, nomogram_figure
    from wsi_hcc.viz.figures import figure_png

    train, test = split_cases(cases, config.task, test_fraction, config.seed)
    model = train_classifier(train, config, progress=progress)
    held_out = evaluate(model, test)
    train_fit = evaluate(model, train)
    out_dir = Path(out_dir)
    tmp = fresh_partial_dir(out_dir)
    save_classifier(model, tmp / "model")
    report = {"task": config.task, "model": config.model, "held_out": held_out["metrics"],
              "training_fit": train_fit["metrics"], "training": model.card["training"],
              "cam": cam_summary(model, test), "config": config.to_json(), "cohort": cohort or {},
              "split": {"train": [c.case_id for c in train], "test": [c.case_id for c in test],
                        "by": "patient" if any(c.patient for c in cases) else "case"},
              **provenance()}
    binary = len(model.classes) == 2
    positives = [c for c in test if c.label(config.task) == 1] if binary else list(test)
    if positives:
        (tmp / "cam_example").mkdir()
        cam, class_index = grad_cam(model, positives[0].crop)
        files = write_cam(cam, positives[0].crop, tmp / "cam_example",
                          cam_label=f"Grad-CAM: evidence for {model.classes[class_index]}")
        atomic_write_json(tmp / "cam_example" / "energy.json",
                          {"case": positives[0].case_id, "class": model.classes[class_index], "files": files,
                           "energy": cam_energy(cam, positives[0].crop.regions(outside=True))})
    if "nomogram" in model.card:
        figure = nomogram_figure(LogisticNomogram.from_json(model.card["nomogram"]))
        atomic_write_bytes(tmp / "nomogram.png", figure_png(figure, dpi=110))
    rows = [("train", c, p) for c, p in zip(train, predict_proba(model, [c.crop for c in train]))]
    rows += [("test", c, p) for c, p in zip(test, held_out["probabilities"])]
    atomic_write_bytes(tmp / "predictions.csv", _predictions_csv(model, rows))
    atomic_write_json(tmp / "metrics.json", report)
    publish_dir(tmp, out_dir)
    return report
