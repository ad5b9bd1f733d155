"""Ground truth of synthetic slides as QuPath annotations, so training can be tested end to end.

``wsi_hcc.synth`` writes a label mask PNG beside each slide (``MASK_LABELS``: 0 background,
1 non_tumour, 2 tumour; one pixel per ``mask_downsample`` level-0 pixels). Here each labelled class
becomes one QuPath-style GeoJSON feature whose geometry is exactly the union of its mask pixels
in level-0 coordinates, so ``wsi_hcc.qupath.annotations.label_tiles`` labels tiles by majority area.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wsi_hcc.synth import MASK_LABELS
from wsi_hcc.utils.atomic import atomic_write_json

__all__ = ["mask_geojson", "write_mask_geojson"]


def mask_geojson(mask: np.ndarray, downsample: float, labels: dict[int, str] | None = None) -> dict:
    """A QuPath FeatureCollection with one (Multi)Polygon per label value present in ``mask``."""
    import shapely
    from shapely.geometry import mapping

    labels = {k: v for k, v in (labels or MASK_LABELS).items() if k != 0}
    features = []
    for value, name in labels.items():
        boxes = []
        for row, line in enumerate(np.asarray(mask) == value):
            padded = np.concatenate([[False], line, [False]])
            edges = np.flatnonzero(padded[1:] != padded[:-1])
            for x0, x1 in zip(edges[::2], edges[1::2]):  # runs of the row as one rectangle each
                boxes.append(shapely.box(x0 * downsample, row * downsample, x1 * downsample, (row + 1) * downsample))
        if not boxes:
            continue
        region = shapely.union_all(boxes)
        features.append({"type": "Feature", "geometry": mapping(region),
                         "properties": {"objectType": "annotation", "classification": {"name": name}}})
    return {"type": "FeatureCollection", "features": features}


def write_mask_geojson(mask_path: str | Path, out_path: str | Path, downsample: float | None = None) -> Path:
    """Write the GeoJSON of a synthetic slide's mask (``<stem>.mask.png``); ``downsample`` from its sidecar."""
    from PIL import Image

    mask_path, out_path = Path(mask_path), Path(out_path)
    if downsample is None:
        sidecar = mask_path.with_name(mask_path.name.replace(".mask.png", ".synth.json"))
        downsample = float(json.loads(sidecar.read_text())["mask_downsample"])
    mask = np.asarray(Image.open(mask_path))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_path, mask_geojson(mask, downsample))
    return out_path
