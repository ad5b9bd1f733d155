"""What ``wsi-hcc view`` shows: the slides of a classify output folder (or one bare slide), found
from ``predictions.csv``, ``classify-manifest.json`` and the patch stores the run tiled.

Only names from this catalogue reach the file system: the server looks slides up by id (their
stem), never by a path from a request.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from wsi_hcc.errors import WsiHccError
from wsi_hcc.utils.runs import StateFiles
from wsi_hcc.viz.tile_table import TILE_TABLE_SUFFIX

__all__ = ["SlideEntry", "Catalog", "load_catalog"]


@dataclass(frozen=True)
class SlideEntry:
    """One slide: its ``predictions.csv`` row, and where its pixels and results are (None: absent)."""

    id: str
    row: dict[str, str]
    slide_path: Path | None
    store: Path | None = None
    tile_table: Path | None = None
    problem: str = ""  # why it cannot be viewed, one line


@dataclass(frozen=True)
class Catalog:
    """The slides to serve, the folder whose files may be served (None for a bare slide), and what
    the run's manifest says about the model (class and grade names, region threshold)."""

    title: str
    columns: list[str]
    entries: dict[str, SlideEntry]
    root: Path | None = None
    class_names: list[str] = field(default_factory=list)
    grade_names: list[str] = field(default_factory=list)
    region_threshold: float | None = None


def load_catalog(path: str | Path) -> Catalog:
    """A classify output folder (``predictions.csv`` in it) or a slide file; one line if neither."""
    path = Path(path)
    if not path.exists():
        raise WsiHccError(f"{path}: not found; pass the --out folder of wsi-hcc classify or a slide file")
    if path.is_dir() and not (path / "predictions.csv").is_file() and (path / "classify" / "predictions.csv").is_file():
        path = path / "classify"  # the folder of wsi-hcc demo
    if path.is_dir() and not (path / "predictions.csv").is_file():
        from wsi_hcc.slide.readers.dicom_folder import is_dicom_folder

        if not is_dicom_folder(path):
            raise WsiHccError(f"{path}: no predictions.csv in this folder; pass the --out folder of wsi-hcc classify "
                              "(or a slide file to view it without results)")
    if path.is_file() or not (path / "predictions.csv").is_file():
        from wsi_hcc.slide.readers import open_slide

        open_slide(path).close()  # a file that is no slide fails here in one line, not later in the browser
        stem = path.stem if path.is_file() else path.name  # an id for URLs; no output file is named after it
        return Catalog(title=path.name, columns=["slide"], entries={stem: SlideEntry(stem, {"slide": stem}, path)})
    return _classify_folder(path.resolve())


def _classify_folder(out: Path) -> Catalog:
    with open(out / "predictions.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows, columns = list(reader), list(reader.fieldnames or [])
    manifest = _json(out / "classify-manifest.json")
    model = manifest.get("bundle") or manifest.get("model") or {}
    class_names = model.get("class_names") or (model.get("card") or {}).get("class_names") or []
    stores_dir = Path(manifest.get("stores_dir") or out / "stores")
    entries = {}
    for row in rows:
        stem = row.get("slide", "")
        if stem and stem not in entries:
            entries[stem] = _entry(out, stores_dir, stem, row)
    threshold = manifest.get("region_threshold")
    return Catalog(title=out.name, columns=columns, entries=entries, root=out, class_names=list(class_names),
                   grade_names=list(model.get("grade_names") or []),
                   region_threshold=float(threshold) if threshold is not None else None)


def _entry(out: Path, stores_dir: Path, stem: str, row: dict[str, str]) -> SlideEntry:
    from wsi_hcc.store.feature_array import read_store_meta

    state = StateFiles(out, ".classify.json").read(stem) or {}  # classify's state file of the slide
    store = Path(state["store"]) if state.get("store") else stores_dir / f"{stem}.zarr"
    table = out / f"{stem}{TILE_TABLE_SUFFIX}"
    table = table if table.is_file() else None
    if row.get("status") == "failed" and row.get("reason"):  # classify's own reason, not a missing store
        return SlideEntry(stem, row, None, None, table, problem=f"classify failed on this slide: {row['reason']}")
    try:
        slide_path = Path(read_store_meta(store)["slide"]["path"])
    except WsiHccError as exc:
        return SlideEntry(stem, row, None, None, table, problem=str(exc).splitlines()[0])
    if not slide_path.exists():
        return SlideEntry(stem, row, None, store, table,
                          problem=f"{slide_path}: the slide is no longer where it was tiled from")
    return SlideEntry(stem, row, slide_path, store, table)


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
