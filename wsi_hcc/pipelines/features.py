"""Batch feature extraction over many patch stores: ``wsi-hcc features``.

Same batch semantics as tiling: a bad store is reported and the batch goes on; finished stores are
skipped (same model, weights and dtype); a killed run resumes; the run gets a manifest.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsi_hcc.features.extract import FeatureEvents, FeatureExtractor, extract_features
from wsi_hcc.models import create_backbone, file_sha256, save_weights, state_sha256
from wsi_hcc.store.feature_array import FeatureError, read_store_meta, stain_normalizer_for, store_records
from wsi_hcc.store.finder import find_stores
from wsi_hcc.store.patch_store import open_store
from wsi_hcc.store.tool_layouts import H5_LAYOUTS, feature_file_paths, write_feature_files
from wsi_hcc.tiling.inputs import SlideTask
from wsi_hcc.utils.devices import resolve_device
from wsi_hcc.utils.progress import Progress, silent_progress
from wsi_hcc.utils.runs import BatchReport, SlideOutcome, one_line_reason, prepare_out_dir, write_manifest
from wsi_hcc.utils.versions import utc_now

if TYPE_CHECKING:
    import torch

__all__ = ["run_features", "default_decoders", "default_batch_size"]

log = logging.getLogger(__name__)


GPU_BATCH_SIZE = 256  # an H200 runs ResNet-34 1.3x faster at 256 than at 64 (benchmarks/RESULTS.md)
CPU_BATCH_SIZE = 64


def default_decoders(device) -> dict[str, int]:
    """How tiles are decoded when the caller does not say: ``{"decode_threads": n}`` or
    ``{"decode_processes": n}``.

    On a small CPU machine a decoding thread would only steal a core from the model (decoding is
    ~0.1 ms a tile against tens of ms of CPU inference). A GPU needs many decoders, one core staying
    with the thread that launches the model; processes, since decoding threads share that thread's
    GIL: on an H200 with 16 cores, 14 processes fed ResNet-34 1.4x faster than 14 threads
    (benchmarks/RESULTS.md).
    """
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return {"decode_processes": max(1, min(16, cpus - 2))}
    return {"decode_threads": 0 if cpus <= 4 else min(4, cpus // 4)}


def default_batch_size(device) -> int:
    return GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def run_features(stores: list[str | Path], out_dir: str | Path | None, backbone: str, *,
                 weights: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
                 decode_threads: int | None = None, decode_processes: int | None = None, dtype: str = "float16",
                 h5: bool = False, h5_layout: str = "flat", overwrite: bool = False, replace_other: bool = False,
                 gpu_decode: bool = False, allow_resize: bool = False,
                 model: torch.nn.Module | None = None, manifest: bool = True,
                 progress: Progress | None = None) -> BatchReport:
    """Embed every tile of every store with ``backbone``; features go into each store.

    One set of decoders (``decode_threads`` threads or ``decode_processes`` DataLoader worker
    processes; neither given: ``default_decoders``) serves every store of the run. ``gpu_decode``
    decodes plain JPEG stores with nvJPEG instead (measured slower on an H200). ``batch_size``
    defaults to 256 on CUDA and 64 on the CPU. Stores that already hold this model's features are skipped;
    ``replace_other`` replaces another model's. Stores whose tiles differ in size from the model's
    input are refused unless ``allow_resize``. ``model`` is the backbone already built from
    ``weights`` (a caller that checked it first need not build it twice). ``manifest=False`` leaves
    ``features-manifest.json`` to the caller (a cluster's worker embeds one store of a larger run).
    ``h5`` also writes each store's coords and float32 features in ``h5_layout`` (``flat``:
    ``<stem>.h5``; ``trident`` or ``clam``: that tool's files, see ``wsi_hcc.store.tool_layouts``) into ``out_dir``.
    """
    if decode_threads and decode_processes:
        raise FeatureError("--threads and --workers: decode in threads or in worker processes, not both")
    if h5_layout not in H5_LAYOUTS:
        raise FeatureError(f"--h5-layout {h5_layout}: choose one of {', '.join(H5_LAYOUTS)}")
    progress = progress or silent_progress()
    store_paths = find_stores(stores, missing_ok=True)  # a missing store is its own failed row
    out_dir = Path(out_dir) if out_dir is not None else (store_paths[0].parent if store_paths else Path("."))
    prepare_out_dir(out_dir)
    torch_device = resolve_device(device)
    if model is None:
        model = _backbone(backbone, weights)
    if weights is None:
        weights = _keep_random_weights(model, backbone, out_dir)
        progress.message(f"note: no --weights, so these features come from random {backbone} weights, not a trained "
                         f"model (saved as {weights}; pass --weights {weights} to embed more stores alike)")
    extractor = FeatureExtractor(model, torch_device)
    if decode_threads is None and decode_processes is None:
        decoders = default_decoders(torch_device)
    else:
        decoders = {"decode_threads": decode_threads or 0, "decode_processes": decode_processes or 0}
    threads, processes = decoders.get("decode_threads", 0), decoders.get("decode_processes", 0)
    batch_size = batch_size or default_batch_size(torch_device)
    started = utc_now()
    tasks = [SlideTask(path=store, stem=store.name.removesuffix(".zarr")) for store in store_paths]
    events = _Events(tasks, out_dir, h5_layout if h5 else None, backbone, overwrite, progress)
    card = extractor.card
    extract_features(store_paths, extractor, normalizer_for=lambda meta: stain_normalizer_for(meta, card),
                     batch_size=batch_size, decode_threads=threads, decode_processes=processes,
                     dtype=dtype, gpu_decode=gpu_decode, overwrite=overwrite, replace_other=replace_other,
                     allow_resize=allow_resize,
                     events=events)
    outcomes = [events.outcomes[i] for i in range(len(tasks))]
    if manifest:
            write_manifest(out_dir / "features-manifest.json", "features", started, outcomes, backbone=backbone,
                       weights=str(weights) if weights else None, card=model.card.to_dict(), device=str(torch_device),
                       batch_size=batch_size, decode_threads=threads, decode_processes=processes,
                       gpu_decode=gpu_decode, dtype=dtype)
    report = BatchReport(out_dir, tuple(outcomes))
    return report


def _backbone(backbone: str, weights):
    """The backbone; without weights, initialised from a fixed seed, so every run without --weights
    makes the same features and keeps one weights file per backbone, not one per run."""
    if weights is not None:
        return create_backbone(backbone, num_classes=0, weights=weights)
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return create_backbone(backbone, num_classes=0, weights=None)


def _keep_random_weights(model, backbone: str, out_dir: Path) -> Path:
    """Save randomly initialised weights beside the run: features are only reproducible, and a
    later slide only comparable, with the very same weights (pass them back with --weights)."""
    digest = state_sha256(model)[:12]
    path = out_dir / f"{backbone}-random-{digest}.safetensors"
    if not path.exists():
        save_weights(model, model.card, path)
    model.card = replace(model.card, weights_sha256=file_sha256(path))
    return path


class _Events(FeatureEvents):
    """Turns the feature stage's events into batch outcomes, .h5 files and progress."""

    def __init__(self, tasks: list[SlideTask], out_dir: Path, h5_layout: str | None, encoder: str, overwrite: bool,
                 progress: Progress):
        self.tasks, self.out_dir, self.overwrite, self.progress = tasks, out_dir, overwrite, progress
        self.h5_layout, self.encoder = h5_layout, encoder
        self.outcomes: dict[int, SlideOutcome] = {}
        self._started: dict[int, float] = {}

    def store_started(self, index: int, n_tiles: int) -> None:
        self._started[index] = time.perf_counter()
        self.progress.item_started(self.tasks[index].stem, index, len(self.tasks))
        self.progress.steps_planned(n_tiles)

    def tiles_done(self, n_tiles: int) -> None:
        self.progress.steps_done(n_tiles)

    def store_finished(self, index: int, outcome) -> None:
        task = self.tasks[index]
        warnings: tuple[str, ...] = ()
        if not isinstance(outcome, BaseException) and self.h5_layout is not None:
            try:
                warnings = self._write_h5(task, rewrite=not outcome.skipped or self.overwrite)
            except Exception as exc:
                outcome = exc
        base = {"stem": task.stem, "path": str(task.path),
                "seconds": {"total": time.perf_counter() - self._started.get(index, time.perf_counter())}}
        if isinstance(outcome, BaseException):
            log.debug("%s failed", task.path, exc_info=outcome)
            result = SlideOutcome(**base, status="failed", reason=one_line_reason(task.path, outcome))
        elif outcome.skipped:
            result = SlideOutcome(**base, status="skipped", reason="already done", warnings=warnings)
        else:
            result = SlideOutcome(**base, status="done", n_tiles=outcome.n_tiles, warnings=warnings)
        self.outcomes[index] = result
        self.progress.item_finished(result.warnings)

    def _write_h5(self, task: SlideTask, rewrite: bool) -> tuple[str, ...]:
        """Write the store's h5 files (a skipped store only when one is missing); their warnings."""
        meta = read_store_meta(task.path)
        slide, spec = store_records(meta)
        paths = feature_file_paths(self.h5_layout, self.out_dir, task.stem, spec, self.encoder)
        if not rewrite and all(path.exists() for path in paths):
            return ()
        group = open_store(task.path)
        _, warnings = write_feature_files(self.h5_layout, self.out_dir, task.stem, np.asarray(group["coords"][:]),
                                          np.asarray(group["features"][:]), spec, slide, self.encoder,
                                          meta.get("stain_reference"))
        return warnings
