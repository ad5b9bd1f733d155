"""Stain normalisation speed on 256 px tiles of real H&E, ours against torchstain, in one run.

    python benchmarks/bench_stain.py [--repeats 5] [--results]

Runs on one core (OpenCV limited to one thread). Needs ../shared/data/he_liver and torchstain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from _common import median_rate, publish

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGETS = {"Reinhard transform": 1000, "Macenko transform": 300}


def _tiles() -> np.ndarray:
    from PIL import Image

    tiles = []
    for path in sorted((SHARED / "he_liver").glob("liverquant_tile0[234]_HE.jpg")):
        image = np.asarray(Image.open(path).convert("RGB"))
        tiles += [image[y:y + 256, x:x + 256] for y in range(0, 2048, 256) for x in range(0, 2048, 256)]
    if not tiles:
        sys.exit(f"no liver patches under {SHARED / 'he_liver'}")
    # Tissue tiles only: torchstain's Macenko fails on tiles of glass (eigenvalues do not converge).
    return np.stack([t for t in tiles if (t.min(axis=2) < 200).mean() > 0.5])


def main() -> None:
    import cv2
    from PIL import Image
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer

    from wsi_hcc.stain import MacenkoNormalizer, ReinhardNormalizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", action="store_true", help="update benchmarks/RESULTS.md")
    opts = parser.parse_args()
    cv2.setNumThreads(1)
    tiles = _tiles()
    reference = np.asarray(Image.open(SHARED / "he_patches" / "torchstain_target.png").convert("RGB"))
    ours_m, ours_r = MacenkoNormalizer().fit(reference), ReinhardNormalizer().fit(reference)
    theirs_m, theirs_r = NumpyMacenkoNormalizer(), NumpyReinhardNormalizer()
    theirs_m.fit(reference)
    theirs_r.fit(reference)
    n = len(tiles)
    rows = {
        "Reinhard transform": (median_rate(lambda: ours_r.transform(tiles), n, opts.repeats),
                               median_rate(lambda: [theirs_r.normalize(t) for t in tiles], n, opts.repeats)),
        "Macenko transform": (median_rate(lambda: ours_m.transform(tiles), n, opts.repeats),
                              median_rate(lambda: [theirs_m.normalize(t, stains=False) for t in tiles], n, opts.repeats)),
        "Macenko fit": (median_rate(lambda: [MacenkoNormalizer().fit(t) for t in tiles], n, opts.repeats),
                        median_rate(lambda: [NumpyMacenkoNormalizer().fit(t) for t in tiles], n, opts.repeats)),
    }
    lines = [f"{n} tissue tiles of 256 px from the real GTEx liver patches; one core; median of {opts.repeats}.", "",
             "| operation | wsi_hcc tiles/s | torchstain (numpy) tiles/s | ratio | target |", "|---|---:|---:|---:|---|"]
    for name, (ours, theirs) in rows.items():
        goal = TARGETS.get(name)
        verdict = "" if goal is None else f">= {goal}: {'met' if ours >= goal else 'NOT met'}"
        lines.append(f"| {name} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.1f}x | {verdict} |")
    publish("bench_stain", "Stain normalisation: `benchmarks/bench_stain.py`", lines, opts.results)


if __name__ == "__main__":
    main()
