"""A CSV of imaging patients with outcomes -> region boxes, for the whole-liver survival model.

One row per scan; paths relative to the CSV. Columns: ``patient``, ``time``, ``event`` (1 event,
0 censored), ``image:PHASE`` (CT; ``image:MR:PHASE`` for MR; one column per phase, every cell
filled), the region's mask column (``liver`` or ``tumour``) and optionally ``liver_label`` /
``tumour_label`` (the label value(s) in that file, ``;``-separated; default any non-zero). Every row
is checked and loaded before training; a bad one is an error naming its line.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.radiology.crops import channel_name
from wsi_hcc.radiology.load import load_volume
from wsi_hcc.radiology.organ_box import RegionBox, region_box

__all__ = ["read_survival_table"]


def _number(value: str, column: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise WsiHccError(f"{where}: column {column} is {value!r}, not a number") from None


def read_survival_table(path: str | Path, region: str = "liver", size_vox: int = 32
                        ) -> tuple[list[RegionBox], np.ndarray, np.ndarray, list[str], list[str]]:
    """``(boxes, time, event, patients, channels)`` from the CSV at ``path`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise WsiHccError(f"{path}: no such file; give --cases a CSV (columns: patient, time, event, image:PHASE, "
                          f"{region})")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0]) if rows else []
    images = [c for c in columns if c.startswith("image:")]
    missing = [c for c in ("patient", "time", "event", region) if c not in columns]
    if missing or not images:
        raise WsiHccError(f"{path}: missing column(s) {', '.join(missing + ([] if images else ['image:PHASE']))}; "
                          f"columns are patient, time, event, image:PHASE (one per phase), {region}")
    channels = [channel_name(*(c[6:].split(":", 1) if c.count(":") == 2 else ("CT", c[6:]))) for c in images]
    boxes, time, event, patients = [], [], [], []
    for line, row in enumerate(rows, start=2):
        where = f"{path.name} line {line}"
        empty = [c for c in ("patient", "time", "event", region, *images) if not (row.get(c) or "").strip()]
        if empty:
            raise WsiHccError(f"{where}: empty {', '.join(empty)}; fill every cell of these columns")
        flag = _number(row["event"], "event", where)
        if flag not in (0.0, 1.0):
            raise WsiHccError(f"{where}: event is {row['event']!r}; write 1 (event) or 0 (censored)")
        volumes = {name: load_volume(path.parent / row[column], modality=name.split(":")[0])
                   for name, column in zip(channels, images)}
        mask = load_volume(path.parent / row[region])
        labels = [int(_number(v, f"{region}_label", where)) for v in (row.get(f"{region}_label") or "").split(";")
                  if v.strip()]
        values = np.isin(mask.array, labels) if labels else mask.array != 0
        if not values.any():
            raise WsiHccError(f"{where}: the {region} mask {row[region]} is empty; check it and {region}_label")
        boxes.append(region_box(volumes, mask.with_array(values), size_vox))
        time.append(_number(row["time"], "time", where))
        event.append(int(flag))
        patients.append(row["patient"].strip())
    if not boxes:
        raise WsiHccError(f"{path}: no rows; add one row per scan")
    return boxes, np.asarray(time), np.asarray(event), patients, channels
