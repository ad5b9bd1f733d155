"""Radiology segmentation: K-fold training on phantoms (time, held-out Dice) and 128^3 sliding-window inference.

    python benchmarks/bench_radiology_segment.py [--folds 5] [--iterations 100] [--phantoms 10]
        [--repeats 3] [--threads 1] [--results]

Training: ``--phantoms`` phantoms (32x64x64 at 3.0 x 2.5 x 2.5 mm, arterial/portal/delayed), a
MONAI UNet (8-16-32-64) per fold on 32x48x48 patches; each fold is scored on its held-out
phantoms, then the ensemble on 4 further phantoms (seeds 500-503). Inference: a 3-phase 128^3
volume, Gaussian sliding windows of 32x48x48 at overlap 0.25 (MONAI), one model and the
K-fold ensemble, with connected-component clean-up; medians of ``--repeats``. ``--results``
writes the table into benchmarks/RESULTS.md (section ``bench_radiology_segment``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from _common import publish

PHASES = ("arterial", "portal", "delayed")


def _median_s(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from wsi_hcc.radiology import make_phantom
    from wsi_hcc.radiology.seg_metrics import case_metrics, global_dice
    from wsi_hcc.radiology.segment_data import phantom_cases, stack_phases, three_classes
    from wsi_hcc.radiology.segment_infer import clean_labels, predict_probabilities, segment_volume
    from wsi_hcc.radiology.segment_models import SegConfig, SegModel
    from wsi_hcc.radiology.segment_train import train_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--phantoms", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--variants", action="store_true",
                        help="also train the two-stage cross-phase model and the ConvLSTM (one fold each)")
    parser.add_argument("--results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    cases = phantom_cases(args.phantoms, seed=0)
    data_s = time.perf_counter() - start
    config = SegConfig(folds=args.folds, iterations=args.iterations, seed=0)
    model = train_model(cases, config)
    fold_dice = [round(f["held_out_tumour_dice_mean"], 3) for f in model.info["folds"] if "held_out" in f]
    per_fold_s = [f["seconds"] for f in model.info["folds"]]

    held_out = [make_phantom(shape=(32, 64, 64), spacing_mm=(3.0, 2.5, 2.5), phases=PHASES, n_lesions=1 + seed % 2,
                             heterogeneity=0.1 * (seed % 5), seed=seed) for seed in range(500, 504)]

    def score(trained):
        rows, pairs = [], []
        for phantom in held_out:
            labels = segment_volume(trained, phantom.phases).labels.array
            truth = three_classes(phantom.labels.array)
            rows.append(case_metrics(labels, truth, (3.0, 2.5, 2.5)))
            pairs.append((labels == 2, truth == 2))
        return rows, pairs

    rows, pairs = score(model)
    tumour = [r["tumour"]["dice"] for r in rows]
    variant_lines = []
    if args.variants:
        for name, pipeline in (("cross_phase", "two_stage"), ("convlstm", "single")):
            variant = train_model(cases, SegConfig(model=name, pipeline=pipeline, folds=1,
                                                   iterations=args.iterations, seed=0))
            v_rows, v_pairs = score(variant)
            v_dice = [round(r["tumour"]["dice"], 3) for r in v_rows]
            variant_lines.append(f"| {pipeline} {name}, 1 model, {args.iterations} it (per stage), tumour Dice on "
                                 f"4 new phantoms | {v_dice} | mean {np.mean(v_dice):.3f}; trained in "
                                 f"{variant.info['training_seconds']:.0f} s; liver Dice mean "
                                 f"{np.mean([r['liver']['dice'] for r in v_rows]):.3f} |")

    big = make_phantom(shape=(128, 128, 128), spacing_mm=(3.0, 2.5, 2.5), phases=PHASES, seed=9)
    image = stack_phases(big.phases, PHASES)
    single = SegModel(config, model.members[:1]).eval()
    predict_probabilities(single, image[:, :48, :64, :64], (3.0, 2.5, 2.5))  # warm-up
    one_s = _median_s(lambda: predict_probabilities(single, image, (3.0, 2.5, 2.5)), args.repeats)
    ens_s = _median_s(lambda: predict_probabilities(model, image, (3.0, 2.5, 2.5)), args.repeats)
    probs = predict_probabilities(single, image, (3.0, 2.5, 2.5))
    clean_s = _median_s(lambda: clean_labels(probs.argmax(0), (3.0, 2.5, 2.5)), args.repeats)

    lines = ["| task | result | note |", "|---|---|---|",
             f"| train {args.folds}-fold UNet on {args.phantoms} phantoms 32x64x64, {args.iterations} it/fold | "
             f"{model.info['training_seconds']:.0f} s | per fold {per_fold_s} s; phantoms generated in "
             f"{data_s:.1f} s |",
             f"| held-out tumour Dice per fold (CV) | {fold_dice} | mean {np.mean(fold_dice):.3f} |",
             f"| ensemble tumour Dice, 4 new phantoms | {[round(d, 3) for d in tumour]} | mean {np.mean(tumour):.3f}, "
             f"median {np.median(tumour):.3f}, global {global_dice(pairs):.3f}; HD95 median "
             f"{np.median([r['tumour']['hd95_mm'] for r in rows]):.1f} mm; liver Dice mean "
             f"{np.mean([r['liver']['dice'] for r in rows]):.3f} |",
             *variant_lines,
             f"| sliding-window inference 3x128^3, 1 model | {one_s:.2f} s | median of {args.repeats}; "
             f"patch 32x48x48, overlap 0.25, Gaussian |",
             f"| sliding-window inference 3x128^3, {args.folds}-fold ensemble | {ens_s:.2f} s | median of "
             f"{args.repeats} |",
             f"| connected-component clean-up 128^3 | {clean_s:.3f} s | median of {args.repeats} |",
             "",
             f"CPU: {sys.platform}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, torch "
             f"{torch.__version__}."]
    publish("bench_radiology_segment", "Radiology segmentation (phantoms, CPU)", lines, args.results)
    print("JSON " + json.dumps({"training_seconds": model.info["training_seconds"], "fold_dice": fold_dice,
                                "tumour_dice": tumour, "infer_128_one_s": one_s, "infer_128_ensemble_s": ens_s,
                                "clean_s": clean_s}))


if __name__ == "__main__":
    main()
