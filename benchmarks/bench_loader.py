"""Tile loading from a patch store: PatchDataset against reading the raw arrays, in one run.

    python benchmarks/bench_loader.py [--repeats 5] [--results]

One process, one core; the store holds JPEG q90 tiles of a generated slide (256 px at 0.5 um/px).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import median_rate, publish

HERE = Path(__file__).resolve().parent


def _store(root: Path) -> Path:
    from wsi_hcc.synth import write_synthetic_slide
    from wsi_hcc.tiling.config import TileConfig
    from wsi_hcc.tiling.slide_tiler import tile_slide

    slide = write_synthetic_slide(root / "loader.svs", size_px=(16384, 12288), mpp=0.25, seed=3)
    return tile_slide(slide.path, root / "out", TileConfig(min_tissue=0.5)).store_path


def main() -> None:
    from wsi_hcc.stain.augment import load_augmentation
    from wsi_hcc.store.patch_store import open_store
    from wsi_hcc.training.datasets import PatchDataset

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", action="store_true", help="update benchmarks/RESULTS.md")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(Path(tmp))
        tiles = open_store(store)["tiles"]
        n = tiles.shape[0]
        labels = [np.zeros(n, dtype=np.int64)]
        plain = PatchDataset([store], labels)
        augmented = PatchDataset([store], labels, transform=load_augmentation(HERE.parent / "configs" / "augment"
                                                                              / "chen2022.yaml", seed=0))
        def every(read):
            return lambda: [read(i) for i in range(n)]

        # plain zarr decodes a whole chunk (32 tiles) per read: read it a chunk at a time
        chunk = tiles.chunks[0]
        raw = median_rate(lambda: [tiles[s:s + chunk] for s in range(0, n, chunk)], n, opts.repeats)
        rows = {f"raw zarr read (tiles[i:i + {chunk}], one chunk per read)": raw,
                "PatchDataset, no augmentation": median_rate(every(plain.__getitem__), n, opts.repeats),
                "PatchDataset + configs/augment/chen2022.yaml": median_rate(every(augmented.__getitem__), n,
                                                                            opts.repeats)}
    lines = [f"{n} JPEG tiles of 256 px; one process; median of {opts.repeats}.", "",
             "| reader | tiles/s | x raw read |", "|---|---:|---:|"]
    lines += [f"| {name} | {rate:.0f} | {rate / raw:.2f} |" for name, rate in rows.items()]
    ratio = rows["PatchDataset, no augmentation"] / raw
    lines += ["", f"Target: the dataset without augmentation delivers >= 0.80x the raw read rate: "
                  f"{ratio:.2f}x -> {'met' if ratio >= 0.8 else 'NOT met'}"]
    publish("bench_loader", "Tile loading: `benchmarks/bench_loader.py`", lines, opts.results)


if __name__ == "__main__":
    main()
