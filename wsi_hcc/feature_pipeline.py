"""Batch feature extraction over many patch stores: ``wsi-hcc features``.

Same batch semantics as tiling: a bad store is reported and the batch goes on; finished stores are
skipped (same model, weights and dtype); a killed run resumes; the run gets a manifest.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .atomic import atomic_write_json, partial_path
from .features import (FeatureExtractor, extract_store_features, read_store_meta, resolve_device,
                       store_records)
from .h5export import write_coords_h5
from .inputs import SlideTask
from .models import create_backbone
from .pipeline import BatchProgress, BatchReport, SlideOutcome, one_line_reason, prepare_out_dir, silent_progress
from .stain import normalizer_from_dict
from .store import open_store
from .versions import stack_versions

__all__ = ["collect_stores", "run_features", "default_workers"]

log = logging.getLogger(__name__)


def collect_stores(paths: list[str | Path]) -> list[Path]:
    """Stores named directly, or every ``*.zarr`` in a named folder; anything else fails later, per store."""
    stores: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir() and path.suffix != ".zarr" and not (path / "tiles").is_dir():
            stores.extend(sorted(p for p in path.glob("*.zarr") if p.is_dir()))
        else:
            stores.append(path)
    return list(dict.fromkeys(stores))


def default_workers(device) -> int:
    """Decoding is ~1 ms a tile against tens of ms of CPU inference, so on a small CPU machine
    a worker process would only steal a core from the model; a GPU needs many decoders."""
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(12, cpus - 2))
    return 0 if cpus <= 4 else min(4, cpus // 4)


def run_features(stores: list[str | Path], out_dir: str | Path | None, backbone: str, *,
                 weights: str | Path | None = None, device: str = "auto", batch_size: int = 64,
                 num_workers: int | None = None, dtype: str = "float16", h5: bool = False,
                 overwrite: bool = False, gpu_decode: bool = True,
                 progress: BatchProgress | None = None) -> BatchReport:
    """Embed every tile of every store with ``backbone``; features go into each store."""
    import torch

    progress = progress or silent_progress()
    store_paths = collect_stores(stores)
    out_dir = Path(out_dir) if out_dir is not None else (store_paths[0].parent if store_paths else Path("."))
    prepare_out_dir(out_dir)
    torch_device = resolve_device(device)
    model = create_backbone(backbone, num_classes=0, weights=weights)
    extractor = FeatureExtractor(model, torch_device)
    workers = default_workers(torch_device) if num_workers is None else num_workers
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    outcomes = []
    for position, store in enumerate(store_paths):
        task = SlideTask(path=store, stem=store.name.removesuffix(".zarr"))
        progress.slide_started(task, position, len(store_paths))
        outcome = _features_one(task, out_dir, extractor, batch_size, workers, dtype, h5, overwrite, gpu_decode,
                                progress)
        outcomes.append(outcome)
        progress.slide_finished(outcome)
    report = BatchReport(out_dir, tuple(outcomes))
    atomic_write_json(out_dir / "features-manifest.json", {
        "command": "features", "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backbone": backbone, "weights": str(weights) if weights else None, "card": model.card.to_dict(),
        "device": str(torch_device), "batch_size": batch_size, "workers": workers, "dtype": dtype,
        "versions": stack_versions(), "summary": {s: report.count(s) for s in ("done", "skipped", "failed")},
        "slides": [{"stem": o.stem, "path": o.path, "status": o.status, "reason": o.reason} for o in outcomes],
    })
    return report


def _features_one(task: SlideTask, out_dir: Path, extractor: FeatureExtractor, batch_size: int, workers: int,
                  dtype: str, h5: bool, overwrite: bool, gpu_decode: bool, progress: BatchProgress) -> SlideOutcome:
    base = {"stem": task.stem, "path": str(task.path)}
    started = time.perf_counter()
    try:
        normalizer = _normalizer_for(task.path, extractor.card)
        result = extract_store_features(task.path, extractor, normalizer=normalizer, batch_size=batch_size,
                                        num_workers=workers, dtype=dtype, gpu_decode=gpu_decode,
                                        overwrite=overwrite, on_start=progress.tiles_planned,
                                        on_tiles=progress.tiles_written)
        h5_path = out_dir / f"{task.stem}.h5"
        if h5 and (not result.skipped or overwrite or not h5_path.exists()):
            _write_h5(task.path, h5_path)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad store never stops the batch
        log.debug("%s failed", task.path, exc_info=True)
        return SlideOutcome(**base, status="failed", reason=one_line_reason(task, exc),
                            seconds={"total": time.perf_counter() - started})
    status = "skipped" if result.skipped else "done"
    return SlideOutcome(**base, status=status, reason="already done" if result.skipped else "",
                        n_tiles=0 if result.skipped else result.n_tiles,
                        seconds={"total": time.perf_counter() - started})


def _normalizer_for(store: Path, card):
    """Recolour on the fly only when the model was trained on normalised tiles and the store's tiles
    were not written with that same reference."""
    if card.stain_reference is None:
        return None
    if read_store_meta(store).get("stain_reference") == card.stain_reference:
        return None
    return normalizer_from_dict(card.stain_reference)


def _write_h5(store: Path, h5_path: Path) -> None:
    group = open_store(store)
    slide, spec = store_records(read_store_meta(store))
    tmp = partial_path(h5_path)
    write_coords_h5(tmp, np.asarray(group["coords"][:]), spec, slide, features=np.asarray(group["features"][:]))
    os.replace(tmp, h5_path)
