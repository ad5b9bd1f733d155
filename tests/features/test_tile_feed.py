"""The feature stage's tile feed: in-order units from threads or processes, one ring of slots, errors per unit."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from wsi_hcc.features.tile_feed import TileFeed, Unit
from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.store.patch_store import TileReader
from wsi_hcc.tiling.config import TileConfig


def _tiled(slide, tmp_path_factory, compression: str):
    out = tmp_path_factory.mktemp(f"feed_{compression}")
    # one tile per chunk file, so that a test can damage a single tile
    report = run_tile([slide], out, TileConfig(target_mpp=1.0, tile_px=64, qc=False, compression=compression,
                                               chunk_tiles=1))
    assert report.count("done") == 1
    return out / "synthetic.zarr"


@pytest.fixture(scope="module", params=["jpeg", "zstd", "none"])
def store(request, synth_slide, tmp_path_factory):
    return _tiled(synth_slide, tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def jpeg_store(synth_slide, tmp_path_factory):
    return _tiled(synth_slide, tmp_path_factory, "jpeg")


def _units(n_tiles: int, store: int = 0, size: int = 5) -> list[Unit]:
    return [Unit(store, s, min(s + size, n_tiles)) for s in range(0, n_tiles, size)]


def test_read_into_gives_the_tiles_zarr_gives(store):
    import zarr

    reader = TileReader(store)
    tiles = zarr.open_group(str(store), mode="r")["tiles"]
    out = np.full(reader.shape[1:], 7, dtype=np.uint8)
    for index in (0, len(reader) // 2, len(reader) - 1):
        assert reader.read_into(index, out) is out
        np.testing.assert_array_equal(out, tiles[index])


DECODERS = [{}, {"threads": 3}, {"processes": 2}]


@pytest.mark.parametrize("decoders", DECODERS, ids=["inline", "threads", "processes"])
def test_units_come_in_order_with_the_stores_tiles(store, decoders):
    reader = TileReader(store)
    units = _units(len(reader))
    feed = TileFeed([store], [False], units, **decoders)
    seen = []
    for decoded in feed:
        assert decoded.error is None
        np.testing.assert_array_equal(decoded.tiles.numpy(),
                                      np.stack([reader[j] for j in range(decoded.unit.start, decoded.unit.stop)]))
        seen.append(decoded.unit)
        feed.recycle(decoded)
    assert seen == units


@pytest.mark.parametrize("decoders", DECODERS[1:], ids=["threads", "processes"])
def test_held_units_keep_their_tiles_while_decoders_run_ahead(jpeg_store, decoders):
    """A consumer holding ``max_held`` units (a pending batch and one on the device) never sees
    them overwritten, however far the decoders get ahead."""
    reader = TileReader(jpeg_store)
    units = _units(len(reader), size=2) * 4
    max_held = 3
    feed = TileFeed([jpeg_store], [False], units, max_held=max_held, **decoders)
    held = []
    for decoded in feed:
        held.append((decoded, decoded.tiles.clone()))
        if len(held) == max_held:
            for kept, copy in held:
                assert torch.equal(kept.tiles, copy)
                feed.recycle(kept)
            held = []


def test_holding_more_than_max_held_is_refused_not_overwritten(jpeg_store):
    units = _units(len(TileReader(jpeg_store)), size=1)
    feed = TileFeed([jpeg_store], [False], units, max_held=1)
    with pytest.raises(RuntimeError, match="held more units than max_held"):
        list(feed)  # nothing recycled


def test_threads_and_processes_together_are_refused(jpeg_store):
    with pytest.raises(ValueError, match="threads or with processes"):
        TileFeed([jpeg_store], [False], [], threads=1, processes=1)


def test_an_unreadable_unit_reports_its_store_and_the_rest_go_on(store, tmp_path):
    broken = tmp_path / "broken.zarr"
    shutil.copytree(store, broken)
    (broken / "tiles" / "6.0.0.0").write_bytes(b"not a tile")
    missing = tmp_path / "gone.zarr"
    n = len(TileReader(store))
    units = _units(n, 0) + _units(n, 1) + _units(n, 2)
    feed = TileFeed([store, broken, missing], [False] * 3, units, processes=2)
    decoded = []
    for d in feed:
        decoded.append(d)
        feed.recycle(d)
    assert [d.unit for d in decoded] == units
    errors = {d.unit: d.error for d in decoded if d.error}
    assert set(errors) == {Unit(1, 5, 10)} | {u for u in units if u.store == 2}
    assert errors[Unit(1, 5, 10)].startswith(f"{broken}: tiles 5-9 unreadable (")
    assert errors[Unit(1, 5, 10)].endswith("); re-tile the slide")
    assert all(d.tiles is not None for d in decoded if d.unit.store == 0)


def test_encoded_units_carry_jpeg_bytes_for_a_gpu_decoder(jpeg_store):
    reader = TileReader(jpeg_store)
    assert reader.jpeg
    decoded = next(iter(TileFeed([jpeg_store], [True], _units(len(reader)), threads=1)))
    assert decoded.slot is None
    assert [bytes(t.numpy()) for t in decoded.tiles] == [reader.read_chunk(j) for j in range(5)]


@pytest.mark.parametrize("decoders", DECODERS[1:], ids=["threads", "processes"])
def test_closing_the_feed_early_stops_its_decoders(jpeg_store, decoders):
    import multiprocessing
    import threading
    from contextlib import closing

    def decoding():
        return (any(t.name.startswith("wsi-hcc-decode") for t in threading.enumerate())
                or bool(multiprocessing.active_children()))

    units = _units(len(TileReader(jpeg_store)), size=1)
    with closing(iter(TileFeed([jpeg_store], [False], units, **decoders))) as feed:
        next(feed)
        assert decoding()
    assert not decoding()
