"""The Zarr patch store: layout, codecs, and the chunk files the tiler writes.

One Zarr (format 2) group per slide::

    <stem>.zarr/
        tiles            (N, tile_px, tile_px, 3) uint8, CHUNK_TILES tiles per chunk file
        coords           (N, 2) int64, level-0 (x, y) of each tile's top-left corner
        tissue_fraction  (N,) float32
        .zattrs          schema, tile spec, slide, config, versions

Zarr format 2 because zarr's format-3 JPEG codec needs Python >= 3.12; imagecodecs' numcodecs JPEG
codec is registered through the ``numcodecs.codecs`` entry point (pyproject.toml), so plain zarr
reads a store without importing wsi_hcc. A chunk holds several tiles, each encoded on its own
(``wsi_hcc.store.tile_pack``, registered the same way): one file per chunk keeps file creation off
the tiler's critical path, and :class:`TileReader` still reads one tile per read. Tile jobs are
aligned to chunks, so concurrent writers never share a file. Stores of one tile per chunk (written
before chunks held several tiles) are still read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.errors import WsiHccError
from wsi_hcc.store.tile_pack import TilePack, index_size, pack_offsets, pack_tiles

__all__ = ["SCHEMA_VERSION", "COMPRESSIONS", "JPEG_SUBSAMPLINGS", "CHUNK_TILES", "make_codec", "codec_from_config",
           "create_store", "chunk_bytes", "chunk_path", "write_attrs", "open_store", "TileReader"]

SCHEMA_VERSION = 1
COMPRESSIONS = ("jpeg", "zstd", "none")


JPEG_SUBSAMPLINGS = ("444", "422", "420")
# Tiles per chunk file: 32 tiles of 224 px (about 0.5 MB of JPEG) make file creation ~3% of the
# work of tiling them, while plain zarr still decodes little more than it asked for.
CHUNK_TILES = 32


def _register_tile_pack() -> None:
    # An installed wsi-hcc registers it through the entry point too; this covers a source tree.
    import numcodecs

    numcodecs.register_codec(TilePack)


_register_tile_pack()


def make_codec(compression: str, jpeg_quality: int = 90, jpeg_colorspace: str | None = None,
               jpeg_subsampling: str = "444"):
    """The numcodecs codec for tile chunks, or None for uncompressed.

    JPEG keeps full-resolution chroma (``"444"``) by default: H&E colour is the signal. At quality
    90, 4:2:0 put the real Aperio slide's stored tiles 5.8 grey levels (mean abs; worst tile 7.5)
    off its own pixels, 4:4:4 1.7 (worst 2.1), for 1.5x the bytes (benchmarks/RESULTS.md). The
    setting is part of the codec's config, so the store records it in ``.zarray`` and in
    ``attrs["wsi_hcc"]["tiles_codec"]``.

    ``jpeg_colorspace="RGB"`` stores RGB-coded JPEG (as Aperio scanners write it); it is only used
    when a slide's own JPEG tiles are copied into the store unchanged (nothing is encoded then, so
    no subsampling is recorded).
    """
    if compression == "jpeg":
        from imagecodecs.numcodecs import Jpeg

        if jpeg_colorspace is None:
            if jpeg_subsampling not in JPEG_SUBSAMPLINGS:
                raise ValueError(f"unknown JPEG subsampling {jpeg_subsampling!r}; "
                                 f"choose one of {', '.join(JPEG_SUBSAMPLINGS)}")
            return Jpeg(level=int(jpeg_quality), subsampling=jpeg_subsampling)
        return Jpeg(level=int(jpeg_quality), colorspace_jpeg=jpeg_colorspace, colorspace_data="RGB")
    if compression == "zstd":
        from numcodecs import Zstd

        return Zstd(level=3)
    if compression == "none":
        return None
    raise ValueError(f"unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")


def codec_from_config(config: dict[str, Any] | None):
    if config is None:
        return None
    import numcodecs

    return numcodecs.get_codec(dict(config))


def create_store(path: Path, tile_px: int, coords: np.ndarray, tissue_fraction: np.ndarray, codec,
                 chunk_tiles: int = CHUNK_TILES) -> None:
    """Create the group and its arrays; ``tiles`` chunks are filled afterwards by ``chunk_path``
    writes of :meth:`TilePack` chunks of ``chunk_tiles`` tiles each, encoded with ``codec``.

    ``chunk_tiles=1`` writes each tile's own stream as its chunk, with ``codec`` itself as the
    array's compressor: a store any zarr reader with imagecodecs opens, without wsi_hcc installed."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    n = int(coords.shape[0])
    chunk_codec = codec if chunk_tiles == 1 else \
        TilePack(chunk_tiles, (tile_px, tile_px, 3), codec.get_config() if codec is not None else None)
    group.create_array("tiles", shape=(n, tile_px, tile_px, 3), chunks=(chunk_tiles, tile_px, tile_px, 3),
                       dtype="uint8", compressors=chunk_codec, fill_value=0,
                       chunk_key_encoding={"name": "v2", "separator": "."})
    coords_arr = group.create_array("coords", shape=(n, 2), chunks=(max(n, 1), 2), dtype="int64",
                                    compressors=None, fill_value=0)
    frac_arr = group.create_array("tissue_fraction", shape=(n,), chunks=(max(n, 1),), dtype="float32",
                                  compressors=None, fill_value=0)
    if n:
        coords_arr[:] = coords
        frac_arr[:] = tissue_fraction


def chunk_bytes(encoded: Sequence[bytes], chunk_tiles: int) -> bytes:
    """The file of one ``tiles`` chunk of a store made by :func:`create_store` with ``chunk_tiles``:
    the tile's own stream where a chunk is one tile, else a :class:`TilePack` of the tiles."""
    return encoded[0] if chunk_tiles == 1 else pack_tiles(encoded)


def chunk_name(chunk: int) -> str:
    """File name of chunk ``chunk`` of ``tiles`` (Zarr format 2, '.' separator)."""
    return f"{chunk}.0.0.0"


def chunk_path(store: Path, chunk: int) -> Path:
    return store / "tiles" / chunk_name(chunk)


def write_attrs(path: Path, attrs: dict[str, Any]) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=2)
    group.attrs.update(attrs)


def open_store(path: str | Path):
    """Open a patch store read-only as a ``zarr.Group``."""
    import zarr

    return zarr.open_group(str(path), mode="r", zarr_format=2)


class TileReader:
    """Reads single tiles of a store straight from its chunk files.

    zarr-python spends ~2 ms of bookkeeping per chunk read and decodes whole chunks; reading a
    chunk's index once, then one tile's bytes, and decoding them with the tile codec is many
    times faster, with the same pixels.
    """

    def __init__(self, path: str | Path):
        import json

        self.path = Path(path)
        self._tiles_dir = str(self.path / "tiles")
        meta = json.loads(Path(self._tiles_dir, ".zarray").read_text())
        compressor = meta.get("compressor") or {}
        if meta.get("filters") or meta.get("order", "C") != "C":
            raise ValueError(f"{self.path}: not a patch store")
        self.shape = tuple(meta["shape"])
        if compressor.get("id") == TilePack.codec_id:
            self._pack: TilePack | None = codec_from_config(compressor)
            self._codec = self._pack.inner
            self._chunk_tiles = self._pack.tiles
        elif meta.get("chunks", [None])[0] == 1:  # one tile per chunk file (--chunk-tiles 1, older stores)
            self._pack, self._codec, self._chunk_tiles = None, codec_from_config(meta["compressor"]), 1
        else:
            raise ValueError(f"{self.path}: not a patch store of single tiles or tile packs")
        self._offsets: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def jpeg(self) -> bool:
        """Chunks are self-contained YCbCr JPEG streams, which a GPU decoder reads as any JPEG.

        Any chroma subsampling qualifies, 4:4:4 (our default) included: nvJPEG decodes 4:4:4
        baseline JPEG (in hardware on A100/H100-class GPUs, else in its CUDA decoder), and
        torchvision's ``decode_jpeg`` refuses only an unknown subsampling. With 4:4:4 there is no
        chroma to upsample, so nvJPEG and libjpeg-turbo also agree more closely than on 4:2:0.
        Pass-through stores keep a scanner's RGB-coded JPEG tiles (Aperio); those need the codec's
        colour-space setting, so they are decoded on the CPU.
        """
        if self._codec is None or self._codec.codec_id != "imagecodecs_jpeg":
            return False
        config = self._codec.get_config()
        return not config.get("tables") and config.get("colorspace_jpeg") in (None, "YCbCr", "YCBCR")

    def read_chunk(self, index: int) -> bytes:
        """Tile ``index``'s encoded bytes (for JPEG stores, a complete JPEG stream).

        Our tiler writes every tile, black ones too, so a missing chunk is a damaged store, never
        tiles of zeros (which is what zarr's fill value would quietly make of it).
        """
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"tile {index} out of range for {self.shape[0]} tiles in {self.path}")
        chunk, slot = divmod(index, self._chunk_tiles)
        name = chunk_name(chunk)
        try:
            # unbuffered and by string: a third of pathlib's read_bytes time, most of it spent
            # holding the GIL that decoding threads share
            with open(f"{self._tiles_dir}/{name}", "rb", buffering=0) as file:
                if self._pack is None:
                    return file.readall()
                offsets = self._offsets.get(chunk)
                if offsets is None:
                    offsets = self._offsets[chunk] = self._chunk_index(file, name)
                if slot + 1 >= len(offsets):
                    raise ValueError("holds fewer tiles than the store")
                return os.pread(file.fileno(), int(offsets[slot + 1] - offsets[slot]), int(offsets[slot]))
        except FileNotFoundError:
            raise WsiHccError(f"{self.path}: tile {index} is missing (no chunk file tiles/{name}); the "
                              "store is damaged: tile the slide again with --overwrite") from None
        except ValueError as exc:
            # as a tile that does not decode: the callers name the store and the tiles
            raise ValueError(f"chunk file tiles/{name} is damaged: {exc}") from None

    def _chunk_index(self, file, name: str) -> np.ndarray:
        size = os.fstat(file.fileno()).st_size
        return pack_offsets(os.pread(file.fileno(), index_size(self._chunk_tiles), 0), size, self._chunk_tiles)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.read_into(index, np.empty(self.shape[1:], dtype=np.uint8))

    def read_into(self, index: int, out: np.ndarray) -> np.ndarray:
        """Decode tile ``index`` into ``out`` (uint8, the tile's shape, C-contiguous): a caller that
        recycles its buffers touches fresh memory once, not once a tile."""
        data = self.read_chunk(index)
        if self._codec is None:
            out.reshape(-1)[:] = np.frombuffer(data, dtype=np.uint8)
        else:
            decoded = self._codec.decode(data, out=out)
            if decoded is not out:  # byte codecs (zstd) may return their own buffer
                out.reshape(-1)[:] = np.frombuffer(decoded, dtype=np.uint8)
        return out
