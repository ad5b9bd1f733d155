"""QuPath GeoJSON export of 50,000 tiles: time to build and write, and the file size.

    python benchmarks/bench_qupath.py [--tiles 50000] [--repeats 3] [--results]

One process, one core. Each tile carries p_HCC, attention and three grade probabilities plus its
argmax class (the classify command's export); regions come from a smooth probability map.
Target (issue "wsi-hcc classify"): under 5 s and under 4 MB gzipped for 50,000 tiles.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import median_seconds, publish

TILE = 448


def _slide(n_tiles: int, seed: int = 0):
    """A square-ish grid of tiles with a smooth p(HCC) map (two blobs) and random grade probabilities."""
    columns = int(np.ceil(np.sqrt(n_tiles * 1.25)))
    index = np.arange(n_tiles)
    col, row = index % columns, index // columns
    coords = np.c_[col * TILE, row * TILE]
    rows = row.max() + 1
    p = np.clip(np.exp(-(((col - 0.35 * columns) / (0.15 * columns)) ** 2 + ((row - 0.5 * rows) / (0.2 * rows)) ** 2))
                + 0.8 * np.exp(-(((col - 0.75 * columns) / (0.08 * columns)) ** 2
                                 + ((row - 0.3 * rows) / (0.08 * rows)) ** 2)), 0, 1)
    rng = np.random.default_rng(seed)
    grades = rng.dirichlet(np.ones(3), size=n_tiles)
    attention = rng.random(n_tiles)
    measurements = {"p_HCC": p, "attention": attention / attention.sum(),
                    "p_G1": grades[:, 0], "p_G2": grades[:, 1], "p_G3": grades[:, 2]}
    return coords, p, measurements


def main() -> None:
    from wsi_hcc.qupath.export import probability_regions, region_features, tile_features, write_qupath_geojson

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--results", action="store_true", help="update benchmarks/RESULTS.md")
    opts = parser.parse_args()
    coords, p, measurements = _slide(opts.tiles)
    classes = ("HCC", "Non-tumour")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def build():
            return tile_features(coords, TILE, measurements, classes, (p < 0.5).astype(int), offset_xy=(0, 0))

        def export(name):
            return lambda: write_qupath_geojson(out / name, build())

        build_s, features = median_seconds(build, opts.repeats)
        gz_s, gz_path = median_seconds(export("tiles.geojson.gz"), opts.repeats)
        plain_s, plain_path = median_seconds(export("tiles.geojson"), opts.repeats)
        regions_s, regions = median_seconds(lambda: region_features(probability_regions(coords, p, TILE, 0.5), "HCC"),
                                    opts.repeats)
        gz_mb, plain_mb = gz_path.stat().st_size / 1e6, plain_path.stat().st_size / 1e6
    n = opts.tiles
    lines = [f"{n:,} tiles, 5 measurements and a class each; one process; median of {opts.repeats}.", "",
             "| step | seconds | size (MB) | bytes/tile |", "|---|---:|---:|---:|",
             f"| build tile features (`tile_features`) | {build_s:.2f} | | |",
             f"| build + write `.geojson.gz` | {gz_s:.2f} | {gz_mb:.2f} | {gz_mb * 1e6 / n:.0f} |",
             f"| build + write `.geojson` | {plain_s:.2f} | {plain_mb:.2f} | {plain_mb * 1e6 / n:.0f} |",
             f"| p >= 0.5 regions ({len(regions)} annotations, `probability_regions` + `region_features`) "
             f"| {regions_s:.2f} | | |", ""]
    met = gz_s < 5 and gz_mb < 4
    lines.append(f"Target: export of 50,000 tiles in < 5 s and < 4 MB gzipped: {gz_s:.2f} s, {gz_mb:.2f} MB -> "
                 f"{'met' if met else 'NOT met'}{'' if n == 50_000 else f' (measured at {n:,} tiles)'}")
    publish("bench_qupath", "QuPath GeoJSON export: `benchmarks/bench_qupath.py`", lines, opts.results)


if __name__ == "__main__":
    main()
