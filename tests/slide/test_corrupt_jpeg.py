"""A damaged JPEG tile in a real slide fails the slide in one line; it is never stored as if fine."""

import shutil

import pytest
import tifffile

from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.store.feature_array import read_store_meta
from wsi_hcc.tiling.config import TileConfig


@pytest.fixture
def damaged_svs(real_svs, tmp_path):
    """A copy of the real SVS with 50 bytes inside one level-0 JPEG tile overwritten, as a disk or
    transfer error would (openslide: "Corrupt JPEG data: premature end of data segment")."""
    path = tmp_path / "damaged.svs"
    shutil.copy(real_svs, path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[5], page.databytecounts[5]
    with open(path, "r+b") as fh:
        fh.seek(offset + count // 2)
        fh.write(b"\0" * 50)
    return path


# CMU-1-Small-Region is 0.499 um/px with 240 px JPEG tiles: at its own mpp the tiler copies them
# (pass-through); at 1.0 it decodes them in full and reduces them (exact) or, its mpp given as 0.5 so
# that the scale is exactly 2, decodes them at half scale (scaled).
ROUTES = [(0.499, 240, True, "exact"), (1.0, 120, False, "exact"), (1.0, 120, False, "scaled")]


def _slide_mpp(resample: str) -> float | None:
    return 0.5 if resample == "scaled" else None


@pytest.mark.parametrize("target_mpp,tile_px,pass_through,resample", ROUTES)
def test_a_damaged_tile_fails_the_slide(damaged_svs, tmp_path, target_mpp, tile_px, pass_through, resample):
    config = TileConfig(target_mpp=target_mpp, tile_px=tile_px, min_tissue=0, qc=False, resample=resample)
    outcome = run_tile([damaged_svs], tmp_path / "out", config, slide_mpp=_slide_mpp(resample)).outcomes[0]
    assert outcome.status == "failed"
    assert outcome.reason.startswith(f"{damaged_svs}: corrupt JPEG tile (")
    assert "Corrupt JPEG data" in outcome.reason and outcome.reason.endswith("copy it again from the scanner's output")
    assert not (tmp_path / "out" / "damaged.zarr").exists()


@pytest.mark.parametrize("target_mpp,tile_px,pass_through,resample", ROUTES)
def test_the_intact_slide_tiles_through_the_same_routes(real_svs, tmp_path, target_mpp, tile_px, pass_through,
                                                         resample):
    config = TileConfig(target_mpp=target_mpp, tile_px=tile_px, min_tissue=0, qc=False, resample=resample)
    outcome = run_tile([real_svs], tmp_path / "out", config, slide_mpp=_slide_mpp(resample)).outcomes[0]
    assert outcome.status == "done", outcome.reason
    meta = read_store_meta(tmp_path / "out" / f"{real_svs.stem}.zarr")
    assert meta["pass_through"] is pass_through
    assert meta["resample"]["used"] == ("exact" if pass_through else resample)
