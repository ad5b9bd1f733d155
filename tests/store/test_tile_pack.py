"""Chunks of several tiles (wsi_hcc.store.tile_pack): one file per chunk, one tile per read."""

import json

import numpy as np
import pytest
import zarr

from wsi_hcc.errors import WsiHccError
from wsi_hcc.store.patch_store import TileReader, make_codec
from wsi_hcc.store.tile_pack import TilePack, pack_offsets, pack_tiles
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.slide_tiler import tile_slide


def _tiles(n: int, px: int = 16) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, px, px, 3), dtype=np.uint8)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_a_chunk_round_trips_and_a_short_last_chunk_pads_with_zeros(compression):
    codec = make_codec(compression)
    pack = TilePack(4, (16, 16, 3), codec.get_config() if codec is not None else None)
    tiles = _tiles(4)
    np.testing.assert_array_equal(pack.decode(pack.encode(tiles)), tiles)
    short = pack.decode(pack_tiles([pack.encode_tile(tile) for tile in tiles[:3]]))
    np.testing.assert_array_equal(short[:3], tiles[:3])
    assert not short[3].any()


def test_the_index_refuses_what_is_not_a_whole_chunk():
    data = pack_tiles([b"abc", b"de"])
    np.testing.assert_array_equal(pack_offsets(data, len(data), 4), [32, 35, 37])
    for bad, size in ((data, len(data) - 1), (b"XXXX" + data[4:], len(data)), (data[:6], len(data))):
        with pytest.raises(ValueError):
            pack_offsets(bad, size, 4)
    with pytest.raises(ValueError):  # more tiles than a chunk holds
        pack_offsets(data, len(data), 1)


def test_the_tiler_writes_one_file_per_chunk_and_jobs_never_share_one(synth_slide, tmp_path):
    base = dict(target_mpp=0.5, tile_px=224, min_tissue=0, qc=False)
    # jobs of 5 tiles round up to whole chunks of 4: no two jobs write one file
    small = tile_slide(synth_slide, tmp_path / "small", TileConfig(**base, chunk_tiles=4, job_tiles=5))
    whole = tile_slide(synth_slide, tmp_path / "whole", TileConfig(**base, chunk_tiles=4))
    chunk_files = sorted(p.name for p in (small.store_path / "tiles").iterdir() if not p.name.startswith("."))
    assert len(chunk_files) == -(-small.n_tiles // 4) and small.n_tiles % 4  # a short last chunk
    for name in chunk_files:
        assert (small.store_path / "tiles" / name).read_bytes() == (whole.store_path / "tiles" / name).read_bytes()
    reader, plain = TileReader(small.store_path), zarr.open_group(str(small.store_path), mode="r")["tiles"]
    assert plain.chunks[0] == 4
    np.testing.assert_array_equal(np.stack([reader[i] for i in range(len(reader))]), plain[:])
    # a chunk's tile is a complete JPEG stream, as a GPU decoder needs
    assert reader.jpeg and reader.read_chunk(5)[:2] == b"\xff\xd8" and reader.read_chunk(5)[-2:] == b"\xff\xd9"


def test_a_damaged_or_missing_chunk_is_one_line(synth_slide, tmp_path):
    result = tile_slide(synth_slide, tmp_path, TileConfig(target_mpp=0.5, tile_px=224, min_tissue=0, qc=False,
                                                          chunk_tiles=4))
    chunk = result.store_path / "tiles" / "1.0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"chunk file tiles/1\.0\.0\.0 is damaged: truncated"):
        TileReader(result.store_path)[5]
    chunk.unlink()
    with pytest.raises(WsiHccError, match=r"tile 5 is missing \(no chunk file tiles/1\.0\.0\.0\)"):
        TileReader(result.store_path)[5]
    assert TileReader(result.store_path)[0].std() > 0  # the other chunks still read


def test_stores_of_one_tile_per_chunk_still_read(tmp_path):
    codec = make_codec("jpeg")
    group = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=2)
    tiles = group.create_array("tiles", shape=(3, 16, 16, 3), chunks=(1, 16, 16, 3), dtype="uint8",
                               compressors=codec, fill_value=0, chunk_key_encoding={"name": "v2", "separator": "."})
    tiles[:] = np.full((3, 16, 16, 3), 128, np.uint8)
    assert json.loads((tmp_path / "old.zarr" / "tiles" / ".zarray").read_text())["compressor"]["id"] == codec.codec_id
    reader = TileReader(tmp_path / "old.zarr")
    np.testing.assert_array_equal(reader[2], tiles[2])


def test_the_chunk_tiles_flag_reaches_the_store(synth_slide, tmp_path):
    from click.testing import CliRunner

    from wsi_hcc.cli.app import main

    result = CliRunner().invoke(main, ["tile", str(synth_slide), "--out", str(tmp_path), "--mpp", "0.5",
                                       "--tile-px", "224", "--no-qc", "--chunk-tiles", "8"])
    assert result.exit_code == 0, result.output
    store = tmp_path / f"{synth_slide.stem}.zarr"
    zarray = json.loads((store / "tiles" / ".zarray").read_text())
    assert zarray["chunks"][0] == zarray["compressor"]["tiles"] == 8
    assert len(TileReader(store)) > 8
