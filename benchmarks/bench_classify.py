"""Seconds per slide for ``wsi-hcc classify`` on a generated 40k x 30k slide, split by stage.

    python benchmarks/bench_classify.py [--device cpu|cuda] [--repeats 1] [--results]

The bundle: a ResNet-34 backbone (random initialisation, 224 px at 0.5 um/px: the card of
``resnet34``) and a gated attention-MIL head trained for a few epochs on six small synthetic
slides. Its accuracy is irrelevant here: this measures the time of each stage on one large slide
(tile, features, MIL, export), every stage redone each repeat (``--overwrite``). The slide and the
bundle are cached in benchmarks/_data/.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from _common import bench_slide, publish

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_data" / "classify"
STAGES = ("tile", "features", "mil", "export")


def _bundle() -> Path:
    """A resnet34 + gated-MIL bundle trained briefly on six small synthetic slides (cached)."""
    import yaml

    from wsi_hcc.mil.config import MilConfig
    from wsi_hcc.pipelines.features import run_features
    from wsi_hcc.pipelines.tile import run_tile
    from wsi_hcc.pipelines.train_mil import run_mil_training
    from wsi_hcc.synth import write_synthetic_slide
    from wsi_hcc.tiling.config import TileConfig

    bundle = CACHE / "run" / "model"
    if (bundle / "card.json").exists():
        return bundle
    slides = [write_synthetic_slide(CACHE / "slides" / f"s{i}.svs", size_px=(2048, 1536), mpp=0.25, seed=50 + i,
                                    tumour=i % 2 == 0).path for i in range(6)]
    run_tile(slides, CACHE / "stores", TileConfig(target_mpp=0.5, tile_px=224, qc=False))
    run_features([CACHE / "stores"], CACHE / "stores", "resnet34", device="cpu")
    (CACHE / "slides.csv").write_text("slide,patient,label\n" + "".join(
        f"s{i},p{i},{'HCC' if i % 2 == 0 else 'non-HCC'}\n" for i in range(6)))
    config = MilConfig(stores=[str(CACHE / "stores")], labels_csv=str(CACHE / "slides.csv"),
                       class_names=["non-HCC", "HCC"], folds=2, epochs=3, patience=2, bootstrap=0, device="cpu")
    (CACHE / "mil.yaml").write_text(yaml.safe_dump({"mil": config.model_dump(mode="json")}))
    return run_mil_training(config, CACHE / "run").bundle_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=40_000)
    parser.add_argument("--height", type=int, default=30_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--results", action="store_true", help="write the section of benchmarks/RESULTS.md")
    args = parser.parse_args()

    from wsi_hcc.pipelines.classify import run_classify

    slide = bench_slide(args.width, args.height)
    bundle = _bundle()
    out = CACHE / f"out_{args.device}"
    runs = []
    for _ in range(args.repeats):
        if out.exists():
            shutil.rmtree(out)
        started = time.perf_counter()
        row = run_classify([slide], bundle, out, device=args.device, batch_size=64).rows[0]
        wall = time.perf_counter() - started
        if row["status"] != "done":
            sys.exit(f"classify failed: {row['reason']}")
        runs.append({**{s: float(row[f"seconds_{s}"]) for s in STAGES}, "wall": wall, "tiles": int(row["n_tiles"])})
        print({k: round(v, 1) for k, v in runs[-1].items()}, file=sys.stderr)
    med = {k: statistics.median(r[k] for r in runs) for k in (*STAGES, "wall")}
    tiles = runs[0]["tiles"]
    lines = [f"{args.width} x {args.height} px at 0.25 um/px -> {tiles} tissue tiles of 224 px at 0.5 um/px; "
             f"ResNet-34 (random init) + gated MIL; device {args.device}; {platform.node()}, "
             f"{len(runs)} run(s), median seconds", "",
             "| stage | seconds | tiles/s |", "|---|---:|---:|"]
    for stage in STAGES:
        lines.append(f"| {stage} | {med[stage]:.1f} | {tiles / med[stage]:,.0f} |")
    lines.append(f"| whole slide, wall clock | {med['wall']:.1f} | {tiles / med['wall']:,.0f} |")
    publish(f"classify_{args.device}", f"wsi-hcc classify, one 40k x 30k slide ({args.device})", lines, args.results)


if __name__ == "__main__":
    main()
