"""A classify output folder made quickly: a generated slide tiled by ``run_tile``, and per-tile
scores taken from the slide's ground-truth tumour mask (p_tumour = the tile's tumour fraction), so
what the viewer draws at a tile is known without training a model.

Not a conftest.py: a second module named ``conftest`` would hide tests/conftest.py from the test
modules that import from it. Each view test module makes ``classified`` a fixture from
``classified_folder``, which builds the folder once per session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Classified:
    out: Path
    slide: Path
    stem: str
    coords: np.ndarray
    tile_size_level0: float
    p_tumour: np.ndarray
    attention: np.ndarray


_BUILT: dict[Path, Classified] = {}


def classified_folder(tmp_path_factory) -> Classified:
    base = tmp_path_factory.getbasetemp()
    if base not in _BUILT:
        _BUILT[base] = _build(tmp_path_factory)
    return _BUILT[base]


def _build(tmp_path_factory) -> Classified:
    from PIL import Image

    from wsi_hcc.pipelines.tile import run_tile
    from wsi_hcc.store.patch_store import open_store
    from wsi_hcc.synth import write_synthetic_slide
    from wsi_hcc.tiling.config import TileConfig
    from wsi_hcc.utils.atomic import atomic_write_csv
    from wsi_hcc.viz.tile_table import write_tile_table

    root = tmp_path_factory.mktemp("view")
    synthetic = write_synthetic_slide(root / "slides" / "case01.svs", size_px=(3072, 2048), mpp=0.5, seed=21,
                                      mask_downsample=16)
    out = root / "results"
    report = run_tile([synthetic.path], out / "stores", TileConfig(target_mpp=1.0, tile_px=64, qc=False))
    assert report.outcomes[0].status == "done", report.outcomes[0].reason
    coords = np.asarray(open_store(out / "stores" / "case01.zarr")["coords"][:], dtype=np.int64)
    size = 128.0
    mask = np.asarray(Image.open(synthetic.mask_path))
    p_tumour = np.array([(mask[int(y) // 16:int(y + size) // 16, int(x) // 16:int(x + size) // 16] == 2).mean()
                         for x, y in coords.tolist()])
    attention = np.linspace(1.0, 2.0, len(coords))
    attention /= attention.sum()
    write_tile_table(out / "case01.tiles.csv.gz", coords, size,
                     {"p_non_tumour": 1 - p_tumour, "p_tumour": p_tumour, "attention": attention})
    atomic_write_csv(out / "predictions.csv", ["slide", "p_hcc", "predicted_label", "n_tiles", "status"],
                     [{"slide": "case01", "p_hcc": 0.9, "predicted_label": "tumour", "n_tiles": len(coords),
                       "status": "done"},
                      {"slide": "gone", "p_hcc": 0.1, "predicted_label": "non_tumour", "n_tiles": 5, "status": "done"}])
    (out / "classify-manifest.json").write_text(json.dumps({
        "command": "classify", "stores_dir": str(out / "stores"), "region_threshold": 0.5,
        "bundle": {"class_names": ["non_tumour", "tumour"], "grade_names": []}}))
    return Classified(out, synthetic.path, "case01", coords, size, p_tumour, attention)
