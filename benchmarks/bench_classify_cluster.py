"""Slides per hour of ``wsi-hcc classify``: one local process against a local dask cluster of two
worker processes, on the same generated slides, in one run; and where the time goes.

    python benchmarks/bench_classify_cluster.py [--slides 8] [--workers 2] [--results]

The bundle is the demo's (``wsi-hcc demo``: colour/texture descriptor features, gated MIL), so
tiling and the exports dominate, as with a GPU backbone. Each run starts from empty outputs. The
cluster's figures come from the scheduler's task stream: the seconds computing each stage, and
the scheduling overhead per slide: the sum, over its stages after the first, of how long a stage
waited to start once the stage before it had ended and its worker was free (scheduler round trips,
result transfers). Start-up (worker processes; their first imports of wsi-hcc and torch) is
reported on its own lines.
Slides and bundle are cached in benchmarks/_data/cluster/.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

from _common import publish

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_data" / "cluster"
STAGES = ("tile", "features", "mil", "export")


def _inputs(n_slides: int, size_px: tuple[int, int]) -> tuple[Path, list[Path]]:
    from wsi_hcc.pipelines.demo import run_demo
    from wsi_hcc.synth import write_synthetic_slide

    bundle = CACHE / "demo" / "model"
    if not (bundle / "card.json").exists():
        run_demo(CACHE / "demo", n_train=6, n_heldout=2)
    slides = []
    for i in range(n_slides):
        path = CACHE / "slides" / f"slide{i:02d}_{size_px[0]}x{size_px[1]}.svs"
        if not path.exists():
            write_synthetic_slide(path, size_px=size_px, mpp=0.5, seed=900 + i, tumour=i % 2 == 0,
                                  tissue_fraction=0.7)
        slides.append(path)
    return bundle, slides


def _run(slides, bundle, out: Path, **kw) -> tuple[float, list[dict]]:
    from wsi_hcc.pipelines.classify import run_classify

    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    rows = run_classify(slides, bundle, out, device="cpu", **kw).rows
    wall = time.perf_counter() - started
    failed = [r["reason"] for r in rows if r["status"] != "done"]
    if failed:
        sys.exit(f"classify failed: {failed[0]}")
    return wall, rows


def _task_stream_figures(stream: list[dict]) -> tuple[dict[str, float], list[float], float]:
    """Seconds computing per stage (all slides); per slide, the scheduling overhead: how long each
    of its stages waited, once the stage before it had ended and its worker was free; and when the
    first task started computing (epoch seconds)."""
    tasks = []
    for item in stream:
        key = str(item["key"])
        if key.startswith("wsi-hcc-"):
            _, _, stage, position, *_ = key.split("-")
            spans = [(s["start"], s["stop"]) for s in item["startstops"] if s["action"] == "compute"]
            tasks.append((stage, position, item["worker"], min(a for a, _ in spans), max(b for _, b in spans),
                          sum(b - a for a, b in spans)))
    compute: dict[str, float] = defaultdict(float)
    for stage, *_, busy in tasks:
        compute[stage] += busy
    idle_since = {}  # each task: when its worker ended the task it ran before (None: its first)
    for worker in {t[2] for t in tasks}:
        mine = sorted((t for t in tasks if t[2] == worker), key=lambda t: t[3])
        idle_since.update({id(t): before[4] for before, t in zip(mine, mine[1:])})
    per_slide: dict[str, float] = defaultdict(float)
    for position in {t[1] for t in tasks}:
        mine = sorted((t for t in tasks if t[1] == position), key=lambda t: t[3])
        for before, task in zip(mine, mine[1:]):  # how long the stage waited, ready, on an idle worker
            per_slide[position] += max(0.0, task[3] - max(before[4], idle_since.get(id(task)) or before[4]))
    return dict(compute), list(per_slide.values()), min(t[3] for t in tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--width", type=int, default=3072, help="slide width in level-0 px")
    parser.add_argument("--height", type=int, default=2048, help="slide height in level-0 px")
    parser.add_argument("--results", action="store_true", help="write the section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    from distributed import Client, LocalCluster, get_task_stream

    bundle, slides = _inputs(args.slides, (args.width, args.height))
    local_wall, local_rows = _run(slides, bundle, CACHE / "out_local")
    print(f"local: {local_wall:.1f} s", file=sys.stderr)

    started = time.perf_counter()
    with LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        startup = time.perf_counter() - started
        with get_task_stream(client) as stream:
            run_started = time.time()
            cluster_wall, cluster_rows = _run(slides, bundle, CACHE / "out_cluster",
                                              scheduler=cluster.scheduler_address)
        records = stream.data
    print(f"cluster: {cluster_wall:.1f} s (+{startup:.1f} s start-up)", file=sys.stderr)
    compute, overhead, first_task = _task_stream_figures(records)

    def per_slide(rows, stage):
        return statistics.median(float(r[f"seconds_{stage}"]) for r in rows)

    same = all(a["p_hcc"] == b["p_hcc"] for a, b in zip(local_rows, cluster_rows))
    n = len(slides)
    tiles = statistics.median(int(r["n_tiles"]) for r in local_rows)
    size = f" --width {args.width} --height {args.height}" if (args.width, args.height) != (3072, 2048) else ""
    lines = [f"{n} generated slides of {args.width} x {args.height} px at 0.5 um/px "
             f"(median {tiles:.0f} tiles of 32 px at 1 um/px), "
             f"the demo's bundle, device cpu; {platform.node()}, {os.cpu_count()} CPUs shared with other jobs, one run "
             f"each, from empty outputs; predictions of both runs equal: {same}. Command: `python "
             f"benchmarks/bench_classify_cluster.py --slides {n} --workers {args.workers}{size} --results`", "",
             "| | 1 local process | local cluster, {w} worker processes |".format(w=args.workers),
             "|---|---:|---:|",
             f"| slides per hour | {3600 * n / local_wall:,.0f} | {3600 * n / cluster_wall:,.0f} |",
             f"| wall seconds | {local_wall:.1f} | {cluster_wall:.1f} (+{startup:.1f} cluster start-up) |"]
    for stage in STAGES:
        lines.append(f"| {stage}, median s per slide | {per_slide(local_rows, stage):.2f} | "
                     f"{per_slide(cluster_rows, stage):.2f} |")
    lines += [f"| scheduling overhead per slide, median (max) s | - | {statistics.median(overhead):.3f} "
              f"({max(overhead):.3f}) |",
              f"| run start to the first task computing (workers import wsi-hcc and torch) | - | "
              f"{first_task - run_started:.1f} s |",
              f"| worker seconds computing, by task (tile / features / classify) | - | "
              f"{compute.get('tile', 0):.1f} / {compute.get('features', 0):.1f} / {compute.get('classify', 0):.1f} |"]
    publish("classify_cluster", "wsi-hcc classify on a local dask cluster: `benchmarks/bench_classify_cluster.py`",
            lines, args.results)


if __name__ == "__main__":
    main()
