"""Chunks of several tiles, each encoded on its own: one file per chunk, one tile per read.

Creating a file costs about as much as decoding and encoding a tile on an ordinary disk (ext4 here:
~1,100 files/s), so a store with one file per tile spends a core on file creation alone. A chunk of
the ``tiles`` array therefore holds several consecutive tiles, each a complete stream of the tile
codec (a JPEG file for JPEG stores), behind a small index::

    b"WHTP"  uint32 n  (n + 1) x uint64 offsets  tile 0 bytes  tile 1 bytes  ...

all little-endian; tile ``i`` is ``chunk[offsets[i]:offsets[i + 1]]``. ``n`` may be smaller than the
chunk's length in tiles only in the last chunk of a store (zarr pads it with the fill value).

Plain zarr reads the array through this codec (registered with numcodecs through the
``numcodecs.codecs`` entry point, importing only this module), decoding a whole chunk per read;
:class:`wsi_hcc.store.patch_store.TileReader` reads the index and then one tile's bytes. This
module imports nothing else of wsi_hcc, so reading a store with plain zarr stays light.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from numcodecs.abc import Codec

__all__ = ["TilePack", "pack_tiles", "pack_offsets", "index_size"]

MAGIC = b"WHTP"
_HEAD = struct.Struct("<4sI")


def index_size(n: int) -> int:
    """Bytes of the head and index of a chunk of ``n`` tiles."""
    return _HEAD.size + 8 * (n + 1)


def pack_tiles(encoded: Sequence[bytes]) -> bytes:
    """One chunk of the tiles' encoded bytes, in order."""
    sizes = [index_size(len(encoded))] + [len(data) for data in encoded]
    offsets = np.cumsum(sizes, dtype="<u8")
    return b"".join([_HEAD.pack(MAGIC, len(encoded)), offsets.tobytes(), *encoded])


def pack_offsets(head: bytes, size: int, max_tiles: int) -> np.ndarray:
    """The ``n + 1`` tile offsets of a chunk of ``size`` bytes whose first bytes are ``head``.

    Raises ValueError for anything that is not a whole chunk: the caller names the file.
    """
    if len(head) < _HEAD.size:
        raise ValueError("shorter than a chunk index")
    magic, n = _HEAD.unpack_from(head)
    if magic != MAGIC or not 0 < n <= max_tiles or len(head) < index_size(n):
        raise ValueError("not a chunk of tiles (bad index)")
    offsets = np.frombuffer(head, dtype="<u8", count=n + 1, offset=_HEAD.size).astype(np.int64)
    if offsets[0] != index_size(n) or np.any(np.diff(offsets) < 0) or offsets[-1] != size:
        raise ValueError("truncated or damaged chunk (its index does not match its size)")
    return offsets


class TilePack(Codec):
    """numcodecs codec of a chunk of ``tiles`` tiles of ``tile_shape``, each encoded with ``tile_codec``
    (a numcodecs codec config; None stores raw bytes)."""

    codec_id = "wsi_hcc_tilepack"

    def __init__(self, tiles: int, tile_shape: Sequence[int], tile_codec: dict[str, Any] | None = None):
        self.tiles = int(tiles)
        self.tile_shape = tuple(int(s) for s in tile_shape)
        self.tile_codec = dict(tile_codec) if tile_codec is not None else None
        self._codec = None
        if tile_codec is not None:
            import numcodecs

            self._codec = numcodecs.get_codec(dict(tile_codec))

    @property
    def inner(self):
        """The codec of one tile (None: raw bytes)."""
        return self._codec

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "tiles": self.tiles, "tile_shape": list(self.tile_shape),
                "tile_codec": self.tile_codec}

    def encode_tile(self, tile: np.ndarray) -> bytes:
        tile = np.ascontiguousarray(tile, dtype=np.uint8).reshape(self.tile_shape)
        return bytes(self._codec.encode(tile)) if self._codec is not None else tile.tobytes()

    def encode(self, buf) -> bytes:
        tiles = np.asarray(buf, dtype=np.uint8).reshape((-1, *self.tile_shape))
        return pack_tiles([self.encode_tile(tile) for tile in tiles])

    def decode_tile(self, data: bytes, out: np.ndarray) -> np.ndarray:
        """Decode one tile's bytes into ``out`` (uint8, the tile's shape, C-contiguous)."""
        if self._codec is None:
            out.reshape(-1)[:] = np.frombuffer(data, dtype=np.uint8)
            return out
        decoded = self._codec.decode(data, out=out)
        if decoded is not out:  # byte codecs (zstd) return their own buffer
            out.reshape(-1)[:] = np.frombuffer(decoded, dtype=np.uint8)
        return out

    def decode(self, buf, out=None):
        data = bytes(buf)
        offsets = pack_offsets(data[:index_size(self.tiles)], len(data), self.tiles)
        tiles = np.zeros((self.tiles, *self.tile_shape), dtype=np.uint8)
        for i in range(len(offsets) - 1):
            self.decode_tile(data[offsets[i]:offsets[i + 1]], tiles[i])
        if out is not None:
            out_view = np.asarray(out).reshape(-1).view(np.uint8)
            out_view[:] = tiles.reshape(-1)
            return out
        return tiles
