"""--h5-layout clam|trident: each tool, reading our files the way its own code does (re-implemented here
from CLAM's Whole_Slide_Bag_FP and TRIDENT's WSI.extract_patch_features / WSIPatcher; see the docstring
of wsi_hcc.store.tool_layouts), cuts the pixels of our tiles; names, datasets, dtypes and attributes
are theirs."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest
import torch
from PIL import Image

from wsi_hcc.pipelines.features import run_features
from wsi_hcc.records import SlideInfo
from wsi_hcc.store.patch_store import TileReader, open_store
from wsi_hcc.store.tool_layouts import clam_reads, layout_warnings, trident_reads
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.grid import plan_tile_spec
from wsi_hcc.tiling.slide_tiler import tile_slide

TRIDENT_ATTRS = {"patch_size": np.int64, "patch_size_level0": np.int64, "level0_magnification": np.float64,
                 "target_magnification": np.float64, "overlap": np.int64, "name": str, "savetodir": str,
                 "level0_width": np.int64, "level0_height": np.int64}
CLAM_ATTRS = {"patch_size": np.int64, "patch_level": np.int64, "downsample": np.ndarray,
              "downsampled_level_dim": np.ndarray, "level_dim": np.ndarray, "name": str, "save_path": str}


def clam_patch(slide: openslide.OpenSlide, coords_file, index: int) -> Image.Image:
    """Whole_Slide_Bag_FP.__getitem__: patch_size pixels at patch_level, from the level-0 coord."""
    with h5py.File(coords_file, "r") as h5:
        coord = h5["coords"][index]
        level, size = h5["coords"].attrs["patch_level"], h5["coords"].attrs["patch_size"]
    return slide.read_region((int(coord[0]), int(coord[1])), int(level), (int(size), int(size))).convert("RGB")


def trident_patch(slide: openslide.OpenSlide, coords_file, index: int) -> Image.Image:
    """WSI.extract_patch_features -> WSIPatcher: pixel sizes 10 / magnification, the level within 0.1 of the
    downsample (else the coarsest finer one), int() of its downsample, then PIL's resize to patch_size."""
    with h5py.File(coords_file, "r") as h5:
        coord, attrs = h5["coords"][index], dict(h5["coords"].attrs)
    downsample = (10 / attrs["target_magnification"]) / (10 / attrs["level0_magnification"])
    size_src = round(attrs["patch_size"] * downsample)
    downsamples = slide.level_downsamples
    near = [level for level, d in enumerate(downsamples) if abs(d - downsample) <= 0.1]
    level = near[0] if near else max(level for level, d in enumerate(downsamples) if d <= downsample)
    size = round(size_src / int(downsamples[level]))
    patch = slide.read_region((int(coord[0]), int(coord[1])), level, (size, size)).convert("RGB")
    return patch.resize((int(attrs["patch_size"]),) * 2)


def _assert_attrs(attrs, expected_types, expected_values):
    assert set(attrs) == set(expected_types)
    for key, kind in expected_types.items():
        assert isinstance(attrs[key], kind), (key, type(attrs[key]))
    for key, value in expected_values.items():
        np.testing.assert_array_equal(attrs[key], value, err_msg=key)


# Mean abs grey levels allowed after the tool's own resize: its bilinear/bicubic filters differ from our
# box filter, more on the 4x level's finer texture (CLAM's bilinear measured 1.01 at 0.5 um/px and 2.26 at
# 2 um/px, worst tile). Resized with a box filter like ours, CLAM's patch is within 0.4 of our tile.
@pytest.mark.parametrize("target_mpp,tile_px,level,patch_size,tolerance", [(0.5, 256, 0, 512, 2.0),
                                                                           (2.0, 128, 1, 256, 3.0)])
def test_clam_and_trident_read_our_resampled_tiles(synth_slide, tmp_path, target_mpp, tile_px, level, patch_size,
                                                   tolerance):
    """0.25 um/px slide, tiles resampled 2x from level 0 (0.5 um/px) or from the 4x level (2 um/px)."""
    slide = openslide.OpenSlide(synth_slide)
    results = {}
    for layout in ("clam", "trident"):
        # The exact path (full decode + area mean), which CLAM's patches match to a grey level per tile;
        # --resample scaled is held to its own bound in tests/tiling/test_scaled_decode.py.
        config = TileConfig(target_mpp=target_mpp, tile_px=tile_px, compression="none", h5=True, h5_layout=layout,
                            qc=False, min_tissue=0.25, resample="exact")
        results[layout] = tile_slide(synth_slide, tmp_path / layout, config)
        assert results[layout].warnings == () and not results[layout].spec.native
    mag = f"{10 / target_mpp:g}x_{tile_px}px_0px_overlap"  # as TRIDENT's Processor names the folder
    trident_file = tmp_path / "trident" / mag / "patches" / "synthetic_patches.h5"
    clam_file = tmp_path / "clam" / "patches" / "synthetic.h5"
    tiles = TileReader(results["clam"].store_path)
    assert len(tiles) == len(TileReader(results["trident"].store_path)) > 0
    for index in range(len(tiles)):
        ours = tiles[index].astype(np.int16)
        clam = clam_patch(slide, clam_file, index)
        assert clam.size == (patch_size, patch_size)  # pixels at patch_level, not tile_px
        assert np.abs(np.asarray(clam.resize((tile_px, tile_px), Image.Resampling.BOX)) - ours).mean() <= 1, index
        clam = np.asarray(clam.resize((tile_px, tile_px), Image.Resampling.BILINEAR))  # torchvision Resize on PIL
        trident = np.asarray(trident_patch(slide, trident_file, index))
        assert np.abs(clam - ours).mean() <= tolerance and np.abs(trident - ours).mean() <= tolerance, index

    with h5py.File(trident_file, "r") as h5:
        assert h5["coords"].dtype == np.int64
        np.testing.assert_array_equal(h5["coords"][:], open_store(results["trident"].store_path)["coords"][:])
        _assert_attrs(dict(h5["coords"].attrs), TRIDENT_ATTRS, {
            "patch_size": tile_px, "patch_size_level0": tile_px * target_mpp / 0.25, "level0_magnification": 40.0,
            "target_magnification": 10 / target_mpp, "overlap": 0, "name": "synthetic",
            "savetodir": str(trident_file.parents[1]), "level0_width": 4096, "level0_height": 3072})
    with h5py.File(clam_file, "r") as h5:
        assert h5["coords"].dtype == np.int64
        _assert_attrs(dict(h5["coords"].attrs), CLAM_ATTRS, {
            "patch_size": patch_size, "patch_level": level, "downsample": [4.0 ** level] * 2,
            "level_dim": slide.level_dimensions[level], "downsampled_level_dim": slide.level_dimensions[level],
            "name": "synthetic", "save_path": str(clam_file.parent)})


@pytest.mark.parametrize("layout", ["clam", "trident"])
def test_native_tiles_of_the_real_svs_are_exactly_the_tools_patches(real_svs, tmp_path, layout):
    """CMU-1-Small-Region is 0.499 um/px: 0.5 um/px tiles are read natively, and each tool reads them unchanged."""
    config = TileConfig(compression="none", h5=True, h5_layout=layout, qc=False)
    result = tile_slide(real_svs, tmp_path, config)
    assert result.spec.native and result.warnings == ()
    coords_file = next(tmp_path.glob("**/patches/*.h5"))
    read = clam_patch if layout == "clam" else trident_patch
    slide = openslide.OpenSlide(real_svs)
    tiles = TileReader(result.store_path)
    assert len(tiles) > 20
    for index in range(len(tiles)):
        np.testing.assert_array_equal(np.asarray(read(slide, coords_file, index)), tiles[index], err_msg=str(index))
    if layout == "trident":
        assert coords_file == tmp_path / "20x_256px_0px_overlap" / "patches" / "CMU-1-Small-Region_patches.h5"
        with h5py.File(coords_file, "r") as h5:  # the tiles' own pixel size, so TRIDENT reads 256 px, not 257
            attrs = h5["coords"].attrs
            assert attrs["target_magnification"] == attrs["level0_magnification"] == 10 / 0.499


@pytest.fixture(scope="module")
def tiled_store(synth_slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("tool_stores")
    return tile_slide(synth_slide, out, TileConfig(target_mpp=0.5, tile_px=160, qc=False)).store_path


@pytest.fixture
def store_for_features(tiled_store, tmp_path):
    return Path(shutil.copytree(tiled_store, tmp_path / "stores" / tiled_store.name))


@pytest.fixture(scope="module")
def tiny_model():
    from wsi_hcc.models import create_backbone

    torch.manual_seed(0)
    return create_backbone("test_resnet", num_classes=0)


def test_features_in_trident_layout(store_for_features, tiny_model, tmp_path):
    report = run_features([store_for_features], tmp_path / "out", "test_resnet", model=tiny_model, device="cpu",
                          h5=True, h5_layout="trident")
    assert report.count("done") == 1 and report.outcomes[0].warnings == ()
    job = tmp_path / "out" / "20x_160px_0px_overlap"
    stored = np.asarray(open_store(store_for_features)["features"][:])
    assert stored.dtype == np.float16  # the store's default; the files hold float32
    with h5py.File(job / "features_test_resnet" / "synthetic.h5", "r") as h5, \
            h5py.File(job / "patches" / "synthetic_patches.h5", "r") as patches:
        assert h5["features"].dtype == np.float32 and h5["coords"].dtype == np.int64
        np.testing.assert_array_equal(h5["features"][:], stored.astype(np.float32))
        np.testing.assert_array_equal(h5["coords"][:], patches["coords"][:])
        assert dict(h5["features"].attrs) == {"name": "synthetic", "encoder": "test_resnet",
                                             "savetodir": str(job / "features_test_resnet")}
        _assert_attrs(dict(h5["coords"].attrs), TRIDENT_ATTRS, dict(patches["coords"].attrs))


def test_features_in_clam_layout_train_in_float32(store_for_features, tiny_model, tmp_path):
    out = tmp_path / "out"
    run_features([store_for_features], out, "test_resnet", model=tiny_model, device="cpu", h5=True,
                 h5_layout="clam")
    stored = np.asarray(open_store(store_for_features)["features"][:]).astype(np.float32)
    with h5py.File(out / "h5_files" / "synthetic.h5", "r") as h5:
        assert set(h5) == {"features", "coords"} and dict(h5["features"].attrs) == dict(h5["coords"].attrs) == {}
        assert h5["features"].dtype == np.float32 and h5["coords"].dtype == np.int32  # as extract_features_fp.py
        np.testing.assert_array_equal(h5["features"][:], stored)
        np.testing.assert_array_equal(h5["coords"][:], open_store(store_for_features)["coords"][:])
    pt_file = out / "pt_files" / "synthetic.pt"
    features = torch.load(pt_file, weights_only=True)  # what Generic_MIL_Dataset does, by default
    assert type(features) is torch.Tensor and features.dtype == torch.float32
    np.testing.assert_array_equal(features.numpy(), stored)
    torch.nn.Linear(features.shape[1], 2)(features)  # float16 features fail here: mat1 and mat2 dtypes differ
    assert (out / "patches" / "synthetic.h5").is_file()

    pt_file.unlink()  # a rerun skips the store but writes a missing file again
    report = run_features([store_for_features], out, "test_resnet", model=tiny_model, device="cpu", h5=True,
                          h5_layout="clam")
    assert report.count("skipped") == 1 and pt_file.is_file()


def _slide(level_downsamples, slide_mpp=0.25):
    dims = tuple((int(40000 / d), int(30000 / d)) for d in level_downsamples)
    return SlideInfo(path="/x/s.svs", fingerprint="sha256:0", dimensions=dims[0], level_dimensions=dims,
                     level_downsamples=tuple(level_downsamples), slide_mpp=slide_mpp, mpp_source="properties",
                     vendor="aperio", backend="openslide")


def test_warnings_say_when_a_tool_would_read_another_area_or_colour():
    slide = _slide((1.0, 4.0, 16.0))
    spec = plan_tile_spec(slide.level_downsamples, slide.slide_mpp, 0.5, 256)
    (flat,) = layout_warnings("flat", "s", spec, slide)
    assert flat.startswith("s.h5: CLAM and TRIDENT read 256 px at level 0 (64 um) where tiles span 128 um")
    assert layout_warnings("clam", "s", spec, slide) == layout_warnings("trident", "s", spec, slide) == ()
    (stain,) = layout_warnings("clam", "s", spec, slide, {"method": "macenko"})
    assert stain == "s: tiles are stain-normalised (macenko); CLAM reads the slide's own colours"

    # A scanner's level at 3.9996: TRIDENT truncates its downsample to 3 and reads a third too much.
    slide = _slide((1.0, 3.9996))
    spec = plan_tile_spec(slide.level_downsamples, slide.slide_mpp, 1.0, 256)
    assert spec.native and spec.level == 1
    (trident,) = layout_warnings("trident", "s", spec, slide)
    assert trident.startswith("s: TRIDENT reads 341 px at level 1") and "+33.2%" in trident
    assert layout_warnings("clam", "s", spec, slide) == ()


def test_the_readers_replayed_on_clam_style_attributes():
    downsamples = (1.0, 4.0, 16.0)
    assert clam_reads({"patch_size": 512, "patch_level": 0}, downsamples).extent_level0 == 512
    # TRIDENT falls back to CLAM's attributes without level0_magnification, as for our flat files
    read = trident_reads({"patch_size": 256, "patch_level": 1, "target_magnification": 10.0}, downsamples)
    assert (read.level, read.size_level, read.extent_level0) == (1, 256, 1024)


def test_command_line_h5_layouts(synth_slide, tmp_path):
    from click.testing import CliRunner

    from wsi_hcc.cli.app import main

    def cli(*args):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    flat = cli("tile", synth_slide, "--out", tmp_path / "flat", "--h5", "--no-qc")
    assert (tmp_path / "flat" / "synthetic.h5").is_file()
    assert "synthetic.h5: CLAM and TRIDENT read 256 px at level 0 (64 um) where tiles span 128 um" in flat
    job = tmp_path / "job"
    quiet = cli("tile", synth_slide, "--out", job, "--h5-layout", "clam", "--no-qc")
    assert (job / "patches" / "synthetic.h5").is_file() and "CLAM" not in quiet
    cli("features", job, "--arch", "test_resnet", "--device", "cpu", "--h5-layout", "clam", "--allow-resize")
    assert (job / "h5_files" / "synthetic.h5").is_file() and (job / "pt_files" / "synthetic.pt").is_file()
    store_files = sorted(p.stat().st_mtime_ns for p in (job / "synthetic.zarr").rglob("*"))
    again = cli("tile", synth_slide, "--out", job, "--h5-layout", "trident", "--no-qc")
    assert "0 done" in again and "1 skipped" in again  # another layout is written from the finished store
    assert (job / "20x_256px_0px_overlap" / "patches" / "synthetic_patches.h5").is_file()
    assert sorted(p.stat().st_mtime_ns for p in (job / "synthetic.zarr").rglob("*")) == store_files
