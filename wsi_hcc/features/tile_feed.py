"""Decoded tiles for the feature stage: units of a store's tiles, in order, decoded ahead of the model.

Decoders are threads or DataLoader worker processes; either way they decode straight into the slots
of one ring of buffers allocated up front (shared memory for processes, pinned on CUDA), so no tile
is copied between processes and memory is touched once. Shipping each decoded tile from a worker,
as a plain DataLoader does, cost the receiving thread 110-200 us a tile in page faults: a ceiling of
5,000-9,000 tiles/s before the model runs (benchmarks/RESULTS.md). imagecodecs decodes with the GIL
released, so threads scale as processes do on a small machine; processes keep the GIL of the
thread that launches the model free, at a little messaging per unit. On an H200 host with 14
decoders, processes fed ResNet-34 1.38x faster than threads (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.store.patch_store import TileReader

__all__ = ["DECODE_UNIT", "Unit", "Decoded", "TileFeed"]

DECODE_UNIT = 32  # tiles a decoder decodes in one go
AHEAD_PER_DECODER = 4  # units decoded ahead of the consumer, per decoder


@dataclass(frozen=True)
class Unit:
    """Tiles ``start .. stop - 1`` of store number ``store``."""

    store: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass
class Decoded:
    """One unit's tiles: ``tiles`` uint8 (n, H, W, 3) on the CPU, or, for ``encoded`` stores, a list of
    JPEG byte tensors for a GPU decoder; ``error`` instead when unreadable."""

    unit: Unit
    tiles: object = None
    error: str | None = None
    slot: int | None = None  # the ring slot holding ``tiles``, until ``TileFeed.recycle``


class _Decoder:
    """Decodes a unit into a ring slot; the same object works in a thread or a worker process."""

    def __init__(self, stores: list[Path], encoded: list[bool], units: list[Unit], ring):
        self.stores, self.encoded, self.units, self.ring = stores, encoded, units, ring
        self._readers: dict[int, TileReader] = {}

    def reader(self, store: int) -> TileReader:
        reader = self._readers.get(store)
        if reader is None:  # two threads may both open it: harmless, the reader is read-only
            reader = self._readers[store] = TileReader(self.stores[store])
        return reader

    def __getitem__(self, task: tuple[int, int | None]) -> tuple[int, int | None, list | None, str | None]:
        """``(unit index, slot)`` -> ``(unit index, slot, JPEG chunks or None, error or None)``."""
        index, slot = task
        unit = self.units[index]
        try:
            reader = self.reader(unit.store)
            if self.encoded[unit.store]:
                return index, slot, [reader.read_chunk(j) for j in range(unit.start, unit.stop)], None
            array = slot_view(self.ring, slot, len(unit), reader.shape[1:]).numpy()
            for k, j in enumerate(range(unit.start, unit.stop)):
                reader.read_into(j, array[k])
            return index, slot, None, None
        except WsiHccError as exc:  # says which tile and the fix already
            return index, slot, None, str(exc)
        except Exception as exc:  # reported against this store; the run goes on
            return index, slot, None, (f"{self.stores[unit.store]}: tiles {unit.start}-{unit.stop - 1} unreadable "
                                       f"({exc}); re-tile the slide")

    def __len__(self) -> int:
        return len(self.units)


def slot_view(ring, slot: int, n_tiles: int, tile_shape: tuple[int, ...]):
    """Slot ``slot`` of ``ring`` (slots, bytes) as ``n_tiles`` uint8 tiles of ``tile_shape``."""
    return ring[slot, :n_tiles * int(np.prod(tile_shape))].view(n_tiles, *tile_shape)


class TileFeed:
    """Yields a ``Decoded`` per unit, in the order given, while decoders work ahead.

    ``threads`` decoding threads, or ``processes`` DataLoader worker processes, or neither: decoding
    in the calling thread. A unit that cannot be read comes back with an error naming its store and
    the fix; the feed goes on. The consumer may hold up to ``max_held`` units at once and hands each
    back to ``recycle`` once its tiles have been used (on CUDA: once the copy to the device is known
    to have finished); its slot is reused after that.
    """

    def __init__(self, stores: list[Path], encoded: list[bool], units: list[Unit], *, threads: int = 0,
                 processes: int = 0, max_held: int = 1, pin_memory: bool = False):
        if threads and processes:
            raise ValueError("decode with threads or with processes, not both")
        self.units, self.threads, self.processes = units, threads, processes
        self.pin_memory = pin_memory
        self._decoders = threads or processes
        # every unit that can be in flight or held at once, and no more than the run has: a small
        # store should not pay for allocating (and sharing) a ring sized for a large batch
        self._n_slots = min(self._decoders * AHEAD_PER_DECODER + max_held + 1, max(1, len(units)))
        self._ring = None
        self._decoder = _Decoder(stores, encoded, units, None)
        self._free: list[int] = []
        self._registered = False

    def __enter__(self) -> "TileFeed":
        """Allocate the ring; it lives until the ``with`` block ends, so tiles still on their way
        to a device when the last unit has been yielded stay valid."""
        self._make_ring()
        return self

    def __exit__(self, *exc) -> None:
        self._release_ring()

    def __iter__(self) -> Iterator[Decoded]:
        if self._ring is None:  # iterated outside a ``with`` block: the ring lives as long as the loop
            with self:
                yield from self
            return
        if self.processes:
            yield from self._from_processes()
        elif self.threads:
            yield from self._from_threads()
        else:
            for index in range(len(self.units)):
                yield self._decoded(self._decoder[self._task(index)])

    def recycle(self, decoded: Decoded) -> None:
        if decoded.slot is not None:
            self._free.append(decoded.slot)
            decoded.slot = None

    def _task(self, index: int) -> tuple[int, int | None]:
        """A unit and the free slot it is decoded into (encoded units need none)."""
        if self._decoder.encoded[self.units[index].store]:
            return index, None
        if not self._free:
            raise RuntimeError("tile feed: no free buffer slot; a consumer held more units than max_held")
        return index, self._free.pop()

    def _decoded(self, result) -> Decoded:
        index, slot, chunks, error = result
        unit = self.units[index]
        if error is not None:
            return Decoded(unit, error=error, slot=slot)
        if chunks is not None:
            import torch

            return Decoded(unit, [torch.frombuffer(bytearray(c), dtype=torch.uint8) if c is not None else None
                                  for c in chunks])
        return Decoded(unit, slot_view(self._ring, slot, len(unit), self._decoder.reader(unit.store).shape[1:]),
                       slot=slot)

    def _from_threads(self) -> Iterator[Decoded]:
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="wsi-hcc-decode")
        ahead: deque[Future] = deque()
        todo = iter(range(len(self.units)))
        try:
            while True:
                while len(ahead) < self.threads * AHEAD_PER_DECODER and (index := next(todo, None)) is not None:
                    ahead.append(pool.submit(self._decoder.__getitem__, self._task(index)))
                if not ahead:
                    return
                yield self._decoded(ahead.popleft().result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _from_processes(self) -> Iterator[Decoded]:
        from torch.utils.data import DataLoader

        # The DataLoader asks for a task only when it hands one back, so at most
        # processes * AHEAD_PER_DECODER units are being decoded or waiting; each takes its slot
        # here, in this process, the moment it is sent.
        tasks = (self._task(index) for index in range(len(self.units)))
        results = iter(DataLoader(self._decoder, sampler=tasks, batch_size=None, num_workers=self.processes,
                                  prefetch_factor=AHEAD_PER_DECODER, collate_fn=_as_is))
        try:
            for result in results:
                yield self._decoded(result)
        finally:
            del results  # stops the workers now, not whenever the collector runs

    def _make_ring(self) -> None:
        """One slot per unit that can be in flight or held, sized for the largest tile of the run."""
        import torch

        shapes = []
        for store in {unit.store for unit in self.units if not self._decoder.encoded[unit.store]}:
            try:
                shapes.append(self._decoder.reader(store).shape[1:])
            except Exception:  # that store's units report it
                pass
        slot_bytes = DECODE_UNIT * max((int(np.prod(s)) for s in shapes), default=0)
        pinned = self.pin_memory and bool(slot_bytes)
        self._ring = torch.empty((self._n_slots, slot_bytes), dtype=torch.uint8,
                                 pin_memory=pinned and not self.processes)
        if self.processes:
            self._ring.share_memory_()
            if pinned:  # shared memory is pinned where it lies
                self._registered = int(torch.cuda.cudart().cudaHostRegister(
                    self._ring.data_ptr(), self._ring.numel(), 0)) == 0
        self._decoder.ring = self._ring
        self._free = list(range(self._n_slots))

    def _release_ring(self) -> None:
        import torch

        if self._registered:
            torch.cuda.synchronize()  # no copy may still read the memory
            torch.cuda.cudart().cudaHostUnregister(self._ring.data_ptr())
            self._registered = False
        self._ring = self._decoder.ring = None


def _as_is(result):
    return result
