"""The tile stage on real and generated slides: pixels, resolution, store layout, provenance."""

import json

import numpy as np
import pytest
import zarr

import wsi_hcc
from wsi_hcc.slide.readers.openslide_reader import OpenSlideReader
from wsi_hcc.store.patch_store import open_store
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.slide_tiler import tile_slide


def _tiles(store_path):
    group = open_store(store_path)
    return group, group["tiles"][:], group["coords"][:], group["tissue_fraction"][:]


def test_native_tiles_equal_openslide_read_region(real_svs, tmp_path):
    config = TileConfig(target_mpp=0.5, tile_px=256, compression="none", min_tissue=0.25)
    result = tile_slide(real_svs, tmp_path, config)
    assert result.spec.native and result.n_tiles > 10
    group, tiles, coords, fractions = _tiles(result.store_path)
    assert tiles.shape == (result.n_tiles, 256, 256, 3) and tiles.dtype == np.uint8
    assert coords.dtype == np.int64 and fractions.dtype == np.float32
    assert (fractions >= 0.25).all()
    reader = OpenSlideReader(real_svs)
    for i in range(result.n_tiles):
        x, y = (int(v) for v in coords[i])
        np.testing.assert_array_equal(tiles[i], reader.read_region((x, y), 0, (256, 256)))


def test_through_openslide_backend_without_direct_decode(real_svs, tmp_path):
    config = TileConfig(compression="none", min_tissue=0.25, backend="openslide", direct_jpeg=False)
    result = tile_slide(real_svs, tmp_path, config)
    _, tiles, coords, _ = _tiles(result.store_path)
    assert result.slide.backend == "openslide"
    x, y = (int(v) for v in coords[-1])
    np.testing.assert_array_equal(tiles[-1], OpenSlideReader(real_svs).read_region((x, y), 0, (256, 256)))


def test_aligned_grid_stores_the_slides_own_jpeg_bytes(real_svs, tmp_path):
    config = TileConfig(target_mpp=0.499, tile_px=240, min_tissue=0)
    result = tile_slide(real_svs, tmp_path, config)
    assert result.pass_through and result.n_tiles == (2220 // 240) * (2967 // 240)
    _, tiles, coords, _ = _tiles(result.store_path)
    reader = OpenSlideReader(real_svs)
    for i in (0, 17, result.n_tiles - 1):
        x, y = (int(v) for v in coords[i])
        np.testing.assert_array_equal(tiles[i], reader.read_region((x, y), 0, (240, 240)))


def test_jpeg_store_is_close_and_much_smaller(real_svs, tmp_path):
    jpeg = tile_slide(real_svs, tmp_path / "j", TileConfig(min_tissue=0.25))
    raw = tile_slide(real_svs, tmp_path / "r", TileConfig(min_tissue=0.25, compression="none"))
    _, a, _, _ = _tiles(jpeg.store_path)
    _, b, _, _ = _tiles(raw.store_path)
    assert np.abs(a.astype(int) - b).mean() < 8
    size = lambda p: sum(f.stat().st_size for f in (p / "tiles").iterdir())  # noqa: E731
    assert size(jpeg.store_path) * 4 < size(raw.store_path)


def _worst_tile_difference(store_path, slide_path) -> float:
    """Mean absolute difference of each stored tile to openslide's read_region there; the worst tile's."""
    from wsi_hcc.store.patch_store import TileReader

    reader, slide = TileReader(store_path), OpenSlideReader(slide_path)
    coords = open_store(store_path)["coords"][:]
    assert len(coords) == len(reader) > 0
    return max(np.abs(reader[i].astype(np.int16) - slide.read_region((int(x), int(y)), 0, reader.shape[2:0:-1])).mean()
               for i, (x, y) in enumerate(coords.tolist()))


def test_default_store_keeps_the_real_slides_colour(real_svs, tmp_path):
    """The slide's own JPEG tiles are 4:4:4; the default store (JPEG 4:4:4 q90) stays within 2.5
    grey levels of openslide's pixels on every stored tile (the whole slide: 32 tiles, under a second)."""
    result = tile_slide(real_svs, tmp_path, TileConfig())
    assert not result.pass_through and result.n_tiles > 20
    assert _worst_tile_difference(result.store_path, real_svs) <= 2.5
    zarray = json.loads((result.store_path / "tiles" / ".zarray").read_text())
    attrs = open_store(result.store_path).attrs["wsi_hcc"]
    assert zarray["compressor"]["tile_codec"]["subsampling"] == attrs["tiles_codec"]["subsampling"] == "444"
    assert attrs["tiles_codec"]["level"] == 90 and attrs["config"]["jpeg_subsampling"] == "444"


def test_chroma_subsampling_stays_a_choice_and_is_recorded(real_svs, tmp_path):
    result = tile_slide(real_svs, tmp_path, TileConfig(jpeg_subsampling="420"))
    assert open_store(result.store_path).attrs["wsi_hcc"]["tiles_codec"]["subsampling"] == "420"
    assert _worst_tile_difference(result.store_path, real_svs) > 5  # why 4:2:0 is no longer the default


def test_subsampling_reads_from_yaml_quoted_or_not(tmp_path):
    from wsi_hcc.errors import ConfigError
    from wsi_hcc.tiling.config import load_config

    cases = (("jpeg_subsampling: 420", "420"), ('jpeg_subsampling: "422"', "422"), ("min_tissue: 0", "444"))
    for text, expected in cases:
        (tmp_path / "c.yaml").write_text(f"tile:\n  {text}\n")
        assert load_config(tmp_path / "c.yaml").jpeg_subsampling == expected
    (tmp_path / "c.yaml").write_text("jpeg_subsampling: 411\n")
    with pytest.raises(ConfigError, match="jpeg_subsampling"):
        load_config(tmp_path / "c.yaml")


def test_store_attributes_record_provenance(real_svs, tmp_path):
    result = tile_slide(real_svs, tmp_path, TileConfig())
    attrs = zarr.open_group(str(result.store_path), mode="r").attrs["wsi_hcc"]
    assert attrs["schema_version"] == 1 and attrs["n_tiles"] == result.n_tiles
    spec = attrs["tile_spec"]
    assert spec["target_mpp"] == 0.5 and spec["tile_px"] == 256 and spec["overlap_px"] == 0
    assert spec["tile_size_level0"] == 256 and spec["level"] == 0 and spec["level_downsample"] == 1.0
    slide = attrs["slide"]
    assert slide["slide_mpp"] == 0.499 and slide["mpp_source"] == "properties"
    assert slide["vendor"] == "aperio" and slide["backend"] == "tiffslide"
    assert slide["dimensions"] == [2220, 2967] and slide["fingerprint"].startswith("sha256:")
    assert attrs["config"]["min_tissue"] == 0.5
    assert attrs["versions"]["wsi-hcc"] == wsi_hcc.__version__
    json.dumps(attrs)  # plain JSON all the way down


def test_resampled_tiles_match_area_downsample_of_level0(synth_slide, tmp_path):
    # The exact path; --resample scaled is held to its own bound in tests/tiling/test_scaled_decode.py
    config = TileConfig(target_mpp=0.5, tile_px=224, compression="none", min_tissue=0.5, resample="exact")
    result = tile_slide(synth_slide, tmp_path, config)
    assert result.spec.scale == 2.0 and result.spec.level == 0 and result.n_tiles > 5
    _, tiles, coords, _ = _tiles(result.store_path)
    reader = OpenSlideReader(synth_slide)
    for i in (0, result.n_tiles // 2, result.n_tiles - 1):
        x, y = (int(v) for v in coords[i])
        region = reader.read_region((x, y), 0, (448, 448)).astype(np.float64)
        expected = region.reshape(224, 2, 224, 2, 3).mean(axis=(1, 3))
        assert np.abs(tiles[i] - expected).max() <= 1.0


def test_tile_physical_size_is_exact_for_odd_resolutions(synth_slide, tmp_path):
    # Declare the slide at 0.2527 um/px: a 224 px tile at 0.5 um/px spans 443.2 level-0 pixels.
    config = TileConfig(target_mpp=0.5, tile_px=224, compression="none", min_tissue=0.5)
    result = tile_slide(synth_slide, tmp_path, config, mpp_override=0.2527)
    attrs = zarr.open_group(str(result.store_path), mode="r").attrs["wsi_hcc"]
    assert attrs["slide"]["mpp_source"] == "override"
    assert attrs["tile_spec"]["tile_size_level0"] * 0.2527 == pytest.approx(224 * 0.5)
    _, tiles, coords, _ = _tiles(result.store_path)
    assert tiles.shape[1:] == (224, 224, 3)
    assert np.all(np.diff(np.unique(coords[:, 0])) % 443 <= 1)


def test_tissue_selection_follows_the_ground_truth_mask(synth_slide, tmp_path):
    from PIL import Image

    result = tile_slide(synth_slide, tmp_path, TileConfig(target_mpp=0.25, min_tissue=0.9))
    _, _, coords, _ = _tiles(result.store_path)
    truth = np.asarray(Image.open(synth_slide.with_suffix(".mask.png")))
    meta = json.loads(synth_slide.with_suffix(".synth.json").read_text())
    ds = meta["mask_downsample"]
    centres = ((coords + 128) // ds).astype(int)
    on_tissue = truth[centres[:, 1], centres[:, 0]] > 0
    assert on_tissue.mean() > 0.95


def test_slide_without_tissue_gives_empty_store_and_warning(blank_tiff, tmp_path):
    result = tile_slide(blank_tiff, tmp_path, TileConfig())
    assert result.n_tiles == 0 and result.n_grid > 0
    assert any("no tissue" in w for w in result.warnings)
    group, tiles, coords, _ = _tiles(result.store_path)
    assert tiles.shape == (0, 256, 256, 3) and coords.shape == (0, 2)
    assert group.attrs["wsi_hcc"]["slide"]["mpp_source"] in ("properties", "tiff-resolution")


def test_h5_coords_for_clam_and_trident(real_svs, tmp_path):
    import h5py

    result = tile_slide(real_svs, tmp_path, TileConfig(h5=True))
    with h5py.File(tmp_path / "CMU-1-Small-Region.h5", "r") as h5:
        coords = h5["coords"]
        np.testing.assert_array_equal(coords[:], _tiles(result.store_path)[2])
        assert coords.attrs["patch_size_level0"] == 256 and coords.attrs["patch_size"] == 256
        assert coords.attrs["target_mpp"] == 0.5 and coords.attrs["level0_mpp"] == 0.499


def test_qc_picture_shows_tiles_and_outline(real_svs, tmp_path):
    from PIL import Image

    tile_slide(real_svs, tmp_path, TileConfig())
    picture = np.asarray(Image.open(tmp_path / "CMU-1-Small-Region.qc.png").convert("RGB"))  # a palette PNG
    assert picture.ndim == 3 and picture.shape[2] == 3
    assert ((picture == (30, 60, 220)).all(axis=2)).sum() > 50  # tile borders
    assert ((picture == (0, 160, 0)).all(axis=2)).sum() > 50  # tissue outline


@pytest.mark.parametrize("compression,tile_px,target_mpp", [("jpeg", 256, 0.5), ("zstd", 256, 0.5),
                                                            ("none", 256, 0.5), ("jpeg", 240, 0.499)])
def test_tile_reader_equals_zarr(real_svs, tmp_path, compression, tile_px, target_mpp):
    from wsi_hcc.store.patch_store import TileReader

    config = TileConfig(compression=compression, tile_px=tile_px, target_mpp=target_mpp, min_tissue=0.25)
    result = tile_slide(real_svs, tmp_path, config)
    _, tiles, _, _ = _tiles(result.store_path)
    reader = TileReader(result.store_path)
    assert len(reader) == len(tiles) > 0
    for i in range(len(tiles)):
        np.testing.assert_array_equal(reader[i], tiles[i])
    with pytest.raises(IndexError):
        reader[len(tiles)]


def test_one_store_finder_for_every_command(tmp_path):
    """Stores named directly or as folders, each once; missing paths, empty folders and two stores of
    one slide stem are one-line errors; features must come from one model."""
    import shutil

    from wsi_hcc.errors import WsiHccError
    from wsi_hcc.store import find_stores, shared_features

    folder = tmp_path / "stores"
    for stem in ("b", "a"):
        (folder / f"{stem}.zarr" / "tiles").mkdir(parents=True)
    (folder / "notes.txt").write_text("not a store")
    assert find_stores([folder, folder / "a.zarr"]) == [folder / "a.zarr", folder / "b.zarr"]
    with pytest.raises(WsiHccError, match="gone: store or folder not found"):
        find_stores([tmp_path / "gone"])
    assert find_stores([tmp_path / "gone"], missing_ok=True) == [tmp_path / "gone"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(WsiHccError, match="empty: no \\*.zarr patch stores in this folder"):
        find_stores([tmp_path / "empty"])
    shutil.copytree(folder / "a.zarr", tmp_path / "elsewhere" / "a.zarr")
    with pytest.raises(WsiHccError, match="two stores are named 'a'"):
        find_stores([folder, tmp_path / "elsewhere"])
    with pytest.raises(WsiHccError, match="no stores given"):
        shared_features([])
