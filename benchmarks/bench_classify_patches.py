"""Patch classification of one slide end to end (``wsi-hcc classify`` with a patch-classifier model
folder) against the model alone on the same number of tiles, on the CPU, measured in one run.

    python benchmarks/bench_classify_patches.py [--width 16000 --height 12000] [--repeats 2] [--results]

Models: LiverNet (the authors' KMC weights when ../shared/data has them, else random) and
ResNet-34 (random), each as a model folder. The slide is a generated one at 0.25 um/px (cached in
benchmarks/_data/). End to end = tiling at the card's 0.5 um/px, reading and scoring every tile,
the tiles CSV, the heatmap and the QuPath file, every stage redone each repeat (``overwrite``).
Model only = the same number of random 224 px tiles through ``to_model_input`` and the model, in
batches of 64. Medians of the repeats; the ratio is tiles/s end to end over tiles/s model only.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from _common import bench_slide, median_rate, median_seconds, publish

HERE = Path(__file__).resolve().parent
KMC = HERE.parents[1] / "shared" / "data" / "models" / "livernet" / "KMC" / "LiverNet_test_fold1_weights.h5"


def _model_folder(arch: str, root: Path) -> Path:
    import torch

    from wsi_hcc.models import create_backbone, save_weights
    from wsi_hcc.pipelines.classify_patches import bundle_patch_classifier

    if arch == "livernet" and KMC.is_file():
        weights = KMC
    else:
        torch.manual_seed(0)
        model = create_backbone(arch, num_classes=2 if arch == "resnet34" else 4)
        weights = root / f"{arch}.safetensors"
        save_weights(model, model.card, weights)
    bundle_patch_classifier(arch, weights, root / arch)
    return root / arch


def _model_only(folder: Path, n_tiles: int, repeats: int) -> float:
    import numpy as np
    import torch

    from wsi_hcc.models import create_backbone, to_model_input

    model = create_backbone(Path(folder).name, weights=folder).eval()
    tiles = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 224, 224, 3), dtype=np.uint8))

    def run():
        with torch.inference_mode():
            for start in range(0, n_tiles, 64):
                model(to_model_input(tiles[:min(64, n_tiles - start)], model.card)).softmax(dim=1)

    run()  # warm-up
    return median_rate(run, n_tiles, repeats)


def main() -> None:
    import torch

    from wsi_hcc.pipelines.classify_patches import run_classify_patches

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16000)
    parser.add_argument("--height", type=int, default=12000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--results", action="store_true", help="also write benchmarks/RESULTS.md")
    args = parser.parse_args()
    slide = bench_slide(args.width, args.height)
    lines = [f"Slide: synthetic {args.width} x {args.height} px at 0.25 um/px, tiled at 0.5 um/px, 224 px; "
             f"CPU, {torch.get_num_threads()} torch threads; medians of {args.repeats}.", "",
             "| model | tiles | end to end s | end to end tiles/s | model only tiles/s | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for arch in ("livernet", "resnet34"):
            folder = _model_folder(arch, root)
            out = root / f"out_{arch}"

            def end_to_end():
                shutil.rmtree(out, ignore_errors=True)
                return run_classify_patches([slide], folder, out, device="cpu", overwrite=True)

            seconds, report = median_seconds(end_to_end, args.repeats)
            n_tiles = int(report.rows[0]["n_tiles"])
            model_rate = _model_only(folder, n_tiles, args.repeats)
            rate = n_tiles / seconds
            lines.append(f"| {arch} | {n_tiles} | {seconds:.1f} | {rate:.1f} | {model_rate:.1f} | "
                         f"{rate / model_rate:.2f} |")
    lines += ["", "Target (issue 16): end to end >= 0.85x model only."]
    publish("classify_patches", "Patch classification of one slide (CPU)", lines, args.results)


if __name__ == "__main__":
    main()
