"""Latency of ``wsi-hcc view`` per 256 px tile on a generated 40k x 30k slide: cold and cached.

    python benchmarks/bench_view_tiles.py [--width 40000 --height 30000] [--tiles 200] [--results]

Requests go through the app in-process (Starlette's TestClient, so the HTTP stack is counted, the
network is not). Cold: the first request of a tile in a fresh app (the slide already open, the OS
file cache as the previous run left it); cached: the same tiles again (the LRU of encoded tiles).
Slide tiles (JPEG) at full resolution, at 1/4 and at 1/16, and overlay tiles (``p_tumour``, PNG)
at full resolution from a tile table of 256 level-0 px tiles covering the slide. Peak RSS says
whether memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import bench_slide, publish


def _results_folder(slide: Path, width: int, height: int) -> Path:
    """A classify-like output folder for the slide: a tile table on a 256 px grid, no store."""
    from wsi_hcc.utils.atomic import atomic_write_csv
    from wsi_hcc.viz.tile_table import write_tile_table

    out = slide.parent / f"view_{width}x{height}"
    if not (out / "predictions.csv").is_file():
        out.mkdir(parents=True, exist_ok=True)
        ys, xs = np.mgrid[0:height - 255:256, 0:width - 255:256]
        coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
        p = np.random.default_rng(0).random(len(coords))
        write_tile_table(out / "bench.tiles.csv.gz", coords, 256.0, {"p_non_tumour": 1 - p, "p_tumour": p})
        atomic_write_csv(out / "predictions.csv", ["slide", "status"], [{"slide": "bench", "status": "done"}])
        (out / "classify-manifest.json").write_text(json.dumps({
            "region_threshold": 0.5, "bundle": {"class_names": ["non_tumour", "tumour"]}}))
    return out


def _catalog(slide: Path, out: Path):
    from dataclasses import replace

    from wsi_hcc.view.catalog import load_catalog

    catalog = load_catalog(out)
    entry = replace(catalog.entries["bench"], slide_path=slide, problem="", tile_table=out / "bench.tiles.csv.gz")
    return replace(catalog, entries={"bench": entry})


def catalog_tiles(catalog) -> int:
    from wsi_hcc.viz.tile_table import read_tile_table

    return len(read_tile_table(catalog.entries["bench"].tile_table).coords)


def _time(client, urls: list[str]) -> list[float]:
    times = []
    for url in urls:
        start = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.text)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=40_000)
    parser.add_argument("--height", type=int, default=30_000)
    parser.add_argument("--tiles", type=int, default=200, help="tiles sampled per kind")
    parser.add_argument("--results", action="store_true", help="rewrite this section of RESULTS.md")
    args = parser.parse_args()
    from starlette.testclient import TestClient

    from wsi_hcc.view import DeepZoomGrid, create_app

    slide = bench_slide(args.width, args.height)
    catalog = _catalog(slide, _results_folder(slide, args.width, args.height))
    grid = DeepZoomGrid(args.width, args.height)
    top = grid.level_count - 1
    rng = np.random.default_rng(1)

    def sample(prefix: str, level: int, suffix: str) -> list[str]:
        cols, rows = grid.tile_count(level)
        picks = rng.choice(cols * rows, size=min(args.tiles, cols * rows), replace=False)
        return [f"{prefix}/{level}/{i % cols}_{i // cols}.{suffix}" for i in picks.tolist()]

    kinds = [("slide, full resolution", sample("/slides/bench_files", top, "jpeg")),
             ("slide, 1/4", sample("/slides/bench_files", top - 2, "jpeg")),
             ("slide, 1/16", sample("/slides/bench_files", top - 4, "jpeg")),
             ("overlay p_tumour, full resolution", sample("/overlays/bench/p_tumour", top, "png"))]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [f"Slide: synthetic {args.width} x {args.height} px at 0.25 um/px (JPEG tiles, pyramid 1/2..), "
             f"{args.tiles} random 256 px tiles per row; {platform.machine()}, shared machine, one run. "
             "Milliseconds per tile request through the app in-process.", "",
             "| tiles | cold median | cold p95 | cached median | cached p95 |", "|---|---|---|---|---|"]
    with TestClient(create_app(catalog), base_url="http://127.0.0.1") as client:
        opened = _time(client, ["/api/slides/bench"])[0] / 1000
        tissue = _time(client, [f"/overlays/bench/tissue/{top}/0_0.png"])[0] / 1000
        regions = _time(client, ["/api/slides/bench/regions"])[0] / 1000
        for name, urls in kinds:
            cold, cached = _time(client, urls), _time(client, urls)
            lines.append(f"| {name} | {statistics.median(cold):.1f} | {np.percentile(cold, 95):.1f} | "
                         f"{statistics.median(cached):.2f} | {np.percentile(cached, 95):.2f} |")
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"Opening the slide (reader, tile table of {catalog_tiles(catalog)} tiles): {opened:.1f} s; "
              f"first tissue tile (computes the mask): {tissue:.1f} s; region polygons (random scores, the worst "
              f"case for the union): {regions:.1f} s. Peak RSS {rss_before:.0f} MiB before the app, "
              f"{rss_after:.0f} MiB after (tile cache bound 256 MiB)."]
    publish("view_tiles", "wsi-hcc view: latency per 256 px tile", lines, args.results)
    print(f"python {' '.join(sys.argv)}", file=sys.stderr)


if __name__ == "__main__":
    main()
