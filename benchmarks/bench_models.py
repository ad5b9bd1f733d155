"""Patch backbones side by side: parameters, multiply-adds and CPU images/s.

    python benchmarks/bench_models.py [--repeats 5] [--batch 16] [--results]
"""

from __future__ import annotations

import argparse

from _common import publish
from bench_features import model_only


def multiply_adds(model, input_px: int = 224) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.eval()(torch.zeros(1, 3, input_px, input_px))
    return counter.get_total_flops() / 2  # one multiply-add is two flops


def main() -> None:
    import torch

    from wsi_hcc.models import create_backbone

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--results", action="store_true", help="update benchmarks/RESULTS.md")
    opts = parser.parse_args()
    cpu = torch.device("cpu")
    lines = [f"CPU, {torch.get_num_threads()} threads, batch {opts.batch} at 224 px, inference mode, "
             f"median of {opts.repeats}.", "",
             "| backbone | classes | parameters | multiply-adds per image | CPU images/s |",
             "|---|---:|---:|---:|---:|"]
    for name, classes in (("resnet34", 2), ("livernet", 4)):
        model = create_backbone(name, num_classes=classes)
        params = sum(p.numel() for p in model.parameters())
        rate = model_only(model, cpu, opts.batch, 2, opts.repeats)
        lines.append(f"| {name} | {classes} | {params:,} | {multiply_adds(model) / 1e9:.2f} G | {rate:.1f} |")
    publish("bench_models", "Backbones: `benchmarks/bench_models.py`", lines, opts.results)


if __name__ == "__main__":
    main()
