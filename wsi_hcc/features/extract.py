"""The feature stage: tiles of patch stores -> backbone embeddings, row i for ``coords[i]``.

How features sit in a store (partial array, done-markers, publish) is ``store.feature_array``'s job;
this module decodes tiles, runs the model and routes rows to their stores.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsi_hcc.features.tile_feed import DECODE_UNIT, Decoded, TileFeed, Unit
from wsi_hcc.models import ModelCard, state_sha256, to_model_input
from wsi_hcc.store.feature_array import (
    FeatureError,
    check_store_fits_card,
    feature_digest,
    mark_chunk_done,
    open_partial,
    publish_features,
    read_store_meta,
)
from wsi_hcc.store.patch_store import TileReader

__all__ = ["BatchFeatures", "FeatureResult", "FeatureExtractor", "FeatureEvents", "extract_features",
           "extract_store_features", "decode_on_device"]


@dataclass(frozen=True)
class FeatureResult:
    store_path: Path
    n_tiles: int
    feature_dim: int
    skipped: bool = False
    resumed_rows: int = 0


class FeatureExtractor:
    """Runs a feature model on uint8 tile batches on one device.

    CUDA runs use bf16 autocast and channels-last.
    """

    def __init__(self, model, device):
        import torch

        self.card: ModelCard = model.card
        self.device = torch.device(device)
        self.model = model.eval().to(self.device, memory_format=torch.channels_last)
        self.model_sha256 = state_sha256(model)

    def __call__(self, tiles, normalizer=None) -> np.ndarray:
        """``tiles``: uint8 (N, H, W, 3) on any device -> float32 features (N, feature_dim) on the CPU.

        ``normalizer``, a fitted ``wsi_hcc.stain`` normaliser, recolours the tiles on the device first.
        """
        return self.submit(tiles, normalizer).result()

    def submit(self, tiles, normalizer=None) -> "BatchFeatures":
        """Start ``__call__``'s work; on CUDA it returns before the GPU is done, so the caller can
        queue the next batch while this one runs."""
        import torch

        with torch.inference_mode():
            tiles = tiles.to(self.device, non_blocking=True)
            if normalizer is not None:
                tiles = normalizer.transform(tiles)
            x = to_model_input(tiles, self.card)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                out = self.model(x).float()
            if self.device.type != "cuda":
                return BatchFeatures(out)
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return BatchFeatures(host, done)


@dataclass
class BatchFeatures:
    """A submitted batch's features: ``result()`` waits for the device, then gives them as numpy."""

    features: object
    done: object = None  # a CUDA event, recorded after the features' copy to the host

    def result(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.features.numpy()


def decode_on_device(chunks: list, device):
    """Decode JPEG chunks (bytes or uint8 tensors) with nvJPEG on ``device``: ``(N, H, W, 3)`` uint8."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [c if isinstance(c, torch.Tensor) else torch.frombuffer(bytearray(c), dtype=torch.uint8) for c in chunks]
    return torch.stack(decode_jpeg(data, mode=ImageReadMode.RGB, device=device)).permute(0, 2, 3, 1)


@dataclass
class _StoreJob:
    """One store's share of a run: where its rows go and how many are still owed."""

    store: Path
    meta: dict
    n_tiles: int
    digest: str
    normalizer: object
    array: object
    chunk_rows: int
    encoded: bool
    done: set[int]  # chunks a previous run finished
    units_left: int = 0
    error: BaseException | None = None
    pending: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)

    @property
    def resumed(self) -> int:
        """Rows a previous run already wrote."""
        return sum(min(self.chunk_rows, self.n_tiles - c * self.chunk_rows) for c in self.done)

    def add(self, start: int, rows: np.ndarray) -> tuple[int, np.ndarray] | None:
        """Keep ``rows`` (tiles ``start`` onwards); once their chunk is complete, give it as
        ``(chunk, block)`` for ``write``."""
        chunk = start // self.chunk_rows
        parts = self.pending.setdefault(chunk, {})
        parts[start] = rows
        chunk_start, chunk_end = chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.n_tiles)
        if sum(len(p) for p in parts.values()) < chunk_end - chunk_start:
            return None
        del self.pending[chunk]
        return chunk, np.concatenate([parts[k] for k in sorted(parts)])

    def write(self, chunk: int, block: np.ndarray) -> None:
        """Write a complete chunk of rows and mark it done; a failure (a full disk) fails this store."""
        if self.error is not None:
            return
        try:
            if block.shape[1] != self.array.shape[1]:
                raise FeatureError(f"{self.store}: the model gives {block.shape[1]} features per tile but its card "
                                   f"says {self.array.shape[1]}; fix feature_dim in the card")
            self.array[chunk * self.chunk_rows:chunk * self.chunk_rows + len(block)] = block.astype(self.array.dtype)
            mark_chunk_done(self.store, chunk)
        except Exception as exc:
            self.error = exc


class FeatureEvents:
    """What a front end hears while features are extracted; the default hears nothing."""

    def store_started(self, index: int, n_tiles: int) -> None: ...

    def tiles_done(self, n_tiles: int) -> None: ...

    def store_finished(self, index: int, outcome: FeatureResult | BaseException) -> None: ...


def extract_features(stores: list[str | Path], extractor: FeatureExtractor, *,
                     normalizer_for: Callable[[dict], object] | None = None, batch_size: int = 64,
                     decode_threads: int = 0, decode_processes: int = 0, dtype: str = "float16",
                     chunk_rows: int = 4096, gpu_decode: bool = False, overwrite: bool = False,
                     replace_other: bool = False, allow_resize: bool = False,
                     events: FeatureEvents | None = None) -> list[FeatureResult | BaseException]:
    """Write ``features`` (N, D) into every store, row i belonging to ``coords[i]``.

    Returns one outcome per store, in order: a ``FeatureResult``, or the error that stopped that
    store (a bad store never stops the others). A killed run resumes from its finished chunks.
    ``normalizer_for(store_meta)`` gives the stain normaliser a store's tiles need, or None.
    Features of this very model are kept unless ``overwrite``; features of another model are an
    error unless ``overwrite`` or ``replace_other``. ``decode_threads`` or ``decode_processes``
    decode ahead of the model (neither: the calling thread decodes); ``gpu_decode`` leaves JPEG
    decoding to nvJPEG on a CUDA device.
    """
    events = events or FeatureEvents()
    unit = min(DECODE_UNIT, batch_size)
    chunk_rows = max(unit, chunk_rows // unit * unit)  # units never straddle chunks
    outcomes: list = [None] * len(stores)
    jobs: dict[int, _StoreJob] = {}
    units: list[Unit] = []
    for index, store in enumerate(map(Path, stores)):
        try:
            job = _prepare(store, extractor, normalizer_for, dtype, chunk_rows, gpu_decode, overwrite, replace_other,
                           allow_resize)
            if isinstance(job, _StoreJob):
                todo = [Unit(index, s, min(s + unit, job.n_tiles)) for c in _todo_chunks(job)
                        for s in range(c * chunk_rows, min((c + 1) * chunk_rows, job.n_tiles), unit)]
                job.units_left = len(todo)
                if todo:
                    jobs[index] = job
                    units.extend(todo)
                    continue
                job = _finish(job, extractor, dtype)  # all rows were written before a kill
            outcomes[index] = job
        except Exception as exc:  # one bad store never stops the others
            outcomes[index] = exc
    # A batch also closes at this many units: stores of a few tiles give short units, and every
    # held unit keeps a buffer until its batch is done.
    batch_units = 2 * -(-batch_size // unit)
    feed = TileFeed([Path(s) for s in stores], [jobs[i].encoded if i in jobs else False for i in range(len(stores))],
                    units, threads=decode_threads, processes=decode_processes,
                    max_held=2 * batch_units + 1,  # the pending batch and the one on the device
                    pin_memory=extractor.device.type == "cuda")
    _Run(jobs, outcomes, feed, extractor, batch_size, batch_units, dtype, events).go()
    return outcomes


class _Run:
    """The loop of one ``extract_features`` call: units in, model batches across stores, rows out.

    The calling thread only takes decoded units and launches the model, which on a GPU is the work
    that bounds a run; one writer thread writes rows and publishes finished stores behind it.
    """

    def __init__(self, jobs, outcomes, feed: TileFeed, extractor, batch_size, batch_units, dtype, events):
        self.jobs, self.outcomes, self.feed = jobs, outcomes, feed
        self.extractor, self.batch_size, self.batch_units = extractor, batch_size, batch_units
        self.dtype, self.events = dtype, events
        self.reported = 0  # stores before this index have had their events
        self.pending: list[tuple[Decoded, object]] = []  # units waiting for a full model batch
        self.running: tuple[list[tuple[Decoded, object]], BatchFeatures] | None = None  # the batch on the device
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="wsi-hcc-write")  # one: writes stay in order
        self.finishing: deque[tuple[int, Future]] = deque()  # stores whose last rows are being written

    def go(self) -> None:
        from contextlib import closing

        try:
            # an error stops the decoders at once; the ring outlives the copies still in flight
            with self.feed, closing(iter(self.feed)) as decoded_units:
                for decoded in decoded_units:
                    self._take(decoded)
                self._flush()
                self._collect()
        finally:
            self.writer.shutdown(wait=True)  # nothing is left half-written behind a caller
        self._report_finished(wait=True)
        self._report_until(len(self.outcomes))

    def _report_until(self, limit: int) -> None:
        """Events for the stores decided without any tiles (skipped, failed early), in order."""
        while self.reported < limit:
            if self.reported not in self.jobs:
                self.events.store_started(self.reported, 0)
                self.events.store_finished(self.reported, self.outcomes[self.reported])
            self.reported += 1

    def _take(self, decoded: Decoded) -> None:
        index = decoded.unit.store
        job = self.jobs[index]
        if self.reported <= index:
            self._report_until(index)
            self.events.store_started(index, job.n_tiles)
            if job.resumed:
                self.events.tiles_done(job.resumed)
            self.reported = index + 1
        if decoded.error and job.error is None:
            job.error = FeatureError(decoded.error)
        if job.error is not None:
            self.feed.recycle(decoded)
            self._unit_done(index)
            return
        device = self.extractor.device
        if job.encoded:
            tiles = decode_on_device(decoded.tiles, device)
        else:
            tiles = decoded.tiles.to(device, non_blocking=True)
        if job.normalizer is not None:
            tiles = job.normalizer.transform(tiles)
        if self.pending and self.pending[0][1].shape[1:] != tiles.shape[1:]:
            self._flush()  # stores tiled at another tile_px: a batch holds tiles of one size
        self.pending.append((decoded, tiles))
        if sum(len(t) for _, t in self.pending) >= self.batch_size or len(self.pending) >= self.batch_units:
            self._flush()

    def _flush(self) -> None:
        """Start the model on the pending units, then hand the batch before it to the writer: the
        device works on one batch while the last one's rows are collected."""
        import torch

        if not self.pending:
            return
        started = self.extractor.submit(torch.cat([t for _, t in self.pending]))
        self._collect()
        self.running, self.pending = (self.pending, started), []

    def _collect(self) -> None:
        """Hand the rows of the batch on the device to the writer. Its units' buffers are free again
        then: the features have reached the host, so every copy queued before them has finished."""
        if self.running is None:
            return
        units, started = self.running
        self.running = None
        rows = started.result()
        offset = 0
        for decoded, tiles in units:
            self.feed.recycle(decoded)
            index = decoded.unit.store
            job = self.jobs[index]
            if job.error is None:
                complete = job.add(decoded.unit.start, rows[offset:offset + len(tiles)])
                if complete is not None:
                    self.writer.submit(job.write, *complete)
            offset += len(tiles)
            self.events.tiles_done(len(tiles))
            self._unit_done(index)
        self._report_finished(wait=False)

    def _unit_done(self, index: int) -> None:
        job = self.jobs[index]
        job.units_left -= 1
        if not job.units_left:  # queued behind the store's last writes, so it runs after them
            self.finishing.append((index, self.writer.submit(self._finish_job, job)))

    def _finish_job(self, job: _StoreJob):
        """In the writer: the store's outcome once all its rows are written."""
        if job.error is not None:
            return job.error
        try:
            return _finish(job, self.extractor, self.dtype)
        except Exception as exc:
            return exc

    def _report_finished(self, wait: bool) -> None:
        """Outcomes and events of stores the writer has finished, in the order they were queued."""
        while self.finishing and (wait or self.finishing[0][1].done()):
            index, future = self.finishing.popleft()
            self.outcomes[index] = future.result()
            self.events.store_finished(index, self.outcomes[index])


def extract_store_features(store: str | Path, extractor: FeatureExtractor, *, normalizer=None,
                           **kwargs) -> FeatureResult:
    """``extract_features`` for one store; its error, if any, is raised."""
    outcome = extract_features([store], extractor, normalizer_for=(lambda meta: normalizer) if normalizer else None,
                               **kwargs)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _prepare(store: Path, extractor: FeatureExtractor, normalizer_for, dtype: str, chunk_rows: int,
             gpu_decode: bool, overwrite: bool, replace_other: bool = False,
             allow_resize: bool = False) -> _StoreJob | FeatureResult:
    meta = read_store_meta(store)
    card = extractor.card
    check_store_fits_card(store, meta, card, allow_resize=allow_resize)
    n_tiles = int(meta["n_tiles"])
    normalizer = normalizer_for(meta) if normalizer_for else None
    digest = feature_digest(card, extractor.model_sha256, dtype, normalizer is not None)
    existing = meta.get("features")
    if existing and existing.get("digest") == digest and (store / "features" / ".zarray").is_file() and not overwrite:
        return FeatureResult(store, n_tiles, card.feature_dim, skipped=True)
    if existing and existing.get("digest") != digest and not (overwrite or replace_other):
        raise FeatureError(f"{store}: already has features from {existing.get('backbone')} "
                           f"(digest {existing.get('digest')}); pass --overwrite to replace them")
    array, done = open_partial(store, n_tiles, card.feature_dim, chunk_rows, dtype, digest)
    reader = TileReader(store)
    encoded = gpu_decode and extractor.device.type == "cuda" and reader.jpeg
    return _StoreJob(store, meta, n_tiles, digest, normalizer, array, chunk_rows, encoded, done)


def _todo_chunks(job: _StoreJob) -> list[int]:
    return [c for c in range((job.n_tiles + job.chunk_rows - 1) // job.chunk_rows) if c not in job.done]


def _finish(job: _StoreJob, extractor: FeatureExtractor, dtype: str) -> FeatureResult:
    publish_features(job.store, job.meta, extractor.card, extractor.model_sha256, dtype, job.digest,
             job.normalizer is not None, job.n_tiles)
    return FeatureResult(job.store, job.n_tiles, extractor.card.feature_dim, resumed_rows=job.resumed)


