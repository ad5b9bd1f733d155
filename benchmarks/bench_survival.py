"""Survival models on the real datasets bundled with lifelines: 5-fold CV C-index (Harrell, Uno),
integrated Brier score and seconds per fold, Cox vs DeepSurv.

    python benchmarks/bench_survival.py [--results]

rossi: 432 released prisoners, 114 re-arrests within 52 weeks, 7 covariates. gbsg2: 686 breast
cancer patients, 299 recurrences, 8 covariates (hormone therapy, menopause and grade coded as
numbers). Folds are event-stratified and identical for both models; the default configs are used
(DeepSurv: one hidden layer of 16, dropout 0.1, Adam 1e-2, weight decay 1e-3, early stopping).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from _common import publish


def _datasets():
    from lifelines.datasets import load_gbsg2, load_rossi

    gbsg2 = load_gbsg2()
    gbsg2["horTh"] = (gbsg2["horTh"] == "yes").astype(int)
    gbsg2["menostat"] = (gbsg2["menostat"] == "Post").astype(int)
    gbsg2["tgrade"] = gbsg2["tgrade"].map({"I": 1, "II": 2, "III": 3})
    return {"rossi": (load_rossi(), "week", "arrest"), "gbsg2": (gbsg2, "time", "cens")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", action="store_true", help="Rewrite this section of benchmarks/RESULTS.md.")
    args = parser.parse_args()
    from wsi_hcc.survival import SurvivalConfig, cross_validate, survival_data

    lines = ["| data | model | C Harrell (mean ± sd) | C Uno | IBS | s per fold |", "|---|---|---|---|---|---|"]
    for name, (table, time_col, event_col) in _datasets().items():
        data = survival_data(table, name, time_col, event_col, None)
        for model in ("cox", "deepsurv"):
            start = time.perf_counter()
            metrics, *_ = cross_validate(data, SurvivalConfig(model=model, folds=5, bootstrap=0, seed=0))
            seconds = (time.perf_counter() - start) / 5
            mean = metrics["fold_mean"]
            lines.append(f"| {name} | {model} | {mean['c_index_harrell']['mean']:.4f} ± "
                         f"{mean['c_index_harrell']['sd']:.4f} | {mean['c_index_uno']['mean']:.4f} | "
                         f"{mean['integrated_brier_score']['mean']:.4f} | {seconds:.2f} |")
    lines.append(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared), "
                 f"torch 1 thread for DeepSurv.")
    publish("survival", "Survival: 5-fold CV on lifelines' rossi and gbsg2", lines, args.results)


if __name__ == "__main__":
    main()
