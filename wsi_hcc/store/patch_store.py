"""The Zarr patch store: layout, codecs, and the chunk files the tiler writes.

One Zarr (format 2) group per slide::

    <stem>.zarr/
        tiles            (N, tile_px, tile_px, 3) uint8, one tile per chunk
        coords           (N, 2) int64, level-0 (x, y) of each tile's top-left corner
        tissue_fraction  (N,) float32
        .zattrs          schema, tile spec, slide, config, versions

Zarr format 2 because zarr's format-3 JPEG codec needs Python >= 3.12; imagecodecs' numcodecs JPEG
codec is registered through the ``numcodecs.codecs`` entry point (pyproject.toml), so plain zarr
reads a store without importing wsi_hcc. Tiles are unsharded, one file per chunk, so concurrent
writers never share a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsi_hcc.errors import WsiHccError

__all__ = ["SCHEMA_VERSION", "COMPRESSIONS", "JPEG_SUBSAMPLINGS", "make_codec", "codec_from_config", "create_store",
           "chunk_path", "write_attrs", "open_store", "TileReader"]

SCHEMA_VERSION = 1
COMPRESSIONS = ("jpeg", "zstd", "none")


JPEG_SUBSAMPLINGS = ("444", "422", "420")


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


def create_store(path: Path, tile_px: int, coords: np.ndarray, tissue_fraction: np.ndarray, codec) -> None:
    """Create the group and its arrays; ``tiles`` chunks are filled afterwards by ``chunk_path`` writes."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    n = int(coords.shape[0])
    group.create_array("tiles", shape=(n, tile_px, tile_px, 3), chunks=(1, tile_px, tile_px, 3), dtype="uint8",
                       compressors=codec, fill_value=0,
                       chunk_key_encoding={"name": "v2", "separator": "."})
    coords_arr = group.create_array("coords", shape=(n, 2), chunks=(max(n, 1), 2), dtype="int64",
                                    compressors=None, fill_value=0)
    frac_arr = group.create_array("tissue_fraction", shape=(n,), chunks=(max(n, 1),), dtype="float32",
                                  compressors=None, fill_value=0)
    if n:
        coords_arr[:] = coords
        frac_arr[:] = tissue_fraction


def chunk_name(index: int) -> str:
    """File name of tile ``index`` in ``tiles`` (Zarr format 2, '.' separator, one tile per chunk)."""
    return f"{index}.0.0.0"


def chunk_path(store: Path, index: int) -> Path:
    return store / "tiles" / chunk_name(index)


def write_attrs(path: Path, attrs: dict[str, Any]) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=2)
    group.attrs.update(attrs)


def open_store(path: str | Path):
    """Open a patch store read-only as a ``zarr.Group``."""
    import zarr

    return zarr.open_group(str(path), mode="r", zarr_format=2)


class TileReader:
    """Reads single tiles of a store straight from their chunk files.

    zarr-python spends ~2 ms of bookkeeping per chunk read; a tile is one chunk, so reading its
    file and decoding it with the array's own codec is several times faster, with the same pixels.
    """

    def __init__(self, path: str | Path):
        import json

        self.path = Path(path)
        self._tiles_dir = str(self.path / "tiles")
        meta = json.loads(Path(self._tiles_dir, ".zarray").read_text())
        if meta.get("chunks", [None])[0] != 1 or meta.get("filters") or meta.get("order", "C") != "C":
            raise ValueError(f"{self.path}: not a one-tile-per-chunk patch store")
        self.shape = tuple(meta["shape"])
        self._codec = codec_from_config(meta["compressor"])

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
        """The tile's encoded bytes.

        Our tiler writes every tile's chunk, black ones too, so a missing chunk is a damaged store,
        never a tile of zeros (which is what zarr's fill value would quietly make of it).
        """
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"tile {index} out of range for {self.shape[0]} tiles in {self.path}")
        try:
            # unbuffered and by string: a third of pathlib's read_bytes time, most of it spent
            # holding the GIL that decoding threads share
            with open(f"{self._tiles_dir}/{chunk_name(index)}", "rb", buffering=0) as file:
                return file.readall()
        except FileNotFoundError:
            raise WsiHccError(f"{self.path}: tile {index} is missing (no chunk file tiles/{chunk_name(index)}); the "
                              "store is damaged: tile the slide again with --overwrite") from None

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
