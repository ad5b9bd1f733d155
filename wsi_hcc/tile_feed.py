"""Decoded tiles for the feature stage: units of a store's tiles, in order, from decoding threads.

Threads and not DataLoader worker processes: imagecodecs decodes with the GIL released, so threads
scale as processes do, and a decoded tile never leaves this process. Shipping a 224 px tile from
a worker cost the receiving process about 60 us in page faults (mapping, then freeing, 150 KB of
shared memory), a ceiling near 10k tiles/s before the model runs at all; a thread decodes straight
into a recycled (on CUDA: pinned) buffer instead (benchmarks/RESULTS.md, feature extraction).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .store import TileReader

__all__ = ["DECODE_UNIT", "Unit", "Decoded", "TileFeed"]

DECODE_UNIT = 32  # tiles a thread decodes in one go
LOOKAHEAD_PER_THREAD = 4  # units decoded ahead of the consumer, per thread


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
    JPEG byte tensors (None for an unwritten tile) for a GPU decoder; ``error`` instead when unreadable."""

    unit: Unit
    tiles: object = None
    error: str | None = None
    buffer: object = None  # what ``TileFeed.recycle`` takes back


class TileFeed:
    """Yields a ``Decoded`` per unit, in the order given, while ``threads`` threads decode ahead.

    ``threads=0`` decodes in the calling thread. A unit that cannot be read comes back with an
    error naming its store and the fix; the feed goes on. Hand each ``Decoded`` back to ``recycle``
    once its tiles have been used (copied to the model's device and run), so its buffer is reused.
    """

    def __init__(self, stores: list[Path], encoded: list[bool], units: list[Unit], *, threads: int = 0,
                 pin_memory: bool = False):
        self.stores, self.encoded, self.units = stores, encoded, units
        self.threads, self.pin_memory = threads, pin_memory
        self._readers: dict[int, TileReader] = {}
        self._free: dict[tuple[int, ...], list] = {}

    def __iter__(self) -> Iterator[Decoded]:
        if not self.threads:
            for unit in self.units:
                yield self._decode(unit, self._buffer(unit))
            return
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="wsi-hcc-decode")
        ahead: deque[Future] = deque()
        todo = iter(self.units)
        try:
            while True:
                while len(ahead) < self.threads * LOOKAHEAD_PER_THREAD and (unit := next(todo, None)) is not None:
                    ahead.append(pool.submit(self._decode, unit, self._buffer(unit)))
                if not ahead:
                    return
                yield ahead.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def recycle(self, decoded: Decoded) -> None:
        if decoded.buffer is not None:
            self._free.setdefault(tuple(decoded.buffer.shape), []).append(decoded.buffer)
            decoded.buffer = None

    def _reader(self, store: int) -> TileReader:
        reader = self._readers.get(store)
        if reader is None:  # two threads may both open it: harmless, the reader is read-only
            reader = self._readers[store] = TileReader(self.stores[store])
        return reader

    def _buffer(self, unit: Unit):
        """A (DECODE_UNIT, H, W, 3) uint8 buffer for the unit's store, reused when one is free."""
        import torch

        if self.encoded[unit.store]:
            return None
        try:
            shape = (DECODE_UNIT, *self._reader(unit.store).shape[1:])
        except Exception:  # the unit's decode reports it
            return None
        free = self._free.get(shape)
        return free.pop() if free else torch.empty(shape, dtype=torch.uint8, pin_memory=self.pin_memory)

    def _decode(self, unit: Unit, buffer) -> Decoded:
        import torch

        try:
            reader = self._reader(unit.store)
            if self.encoded[unit.store]:
                chunks = [reader.read_chunk(j) for j in range(unit.start, unit.stop)]
                return Decoded(unit, [torch.frombuffer(bytearray(c), dtype=torch.uint8) if c is not None else None
                                      for c in chunks])
            tiles = buffer[:len(unit)]
            array = tiles.numpy()
            for k, j in enumerate(range(unit.start, unit.stop)):
                reader.read_into(j, array[k])
            return Decoded(unit, tiles, buffer=buffer)
        except Exception as exc:  # reported against this store; the run goes on
            return Decoded(unit, error=f"{self.stores[unit.store]}: tiles {unit.start}-{unit.stop - 1} unreadable "
                                       f"({exc}); re-tile the slide", buffer=buffer)
