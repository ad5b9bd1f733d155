"""Every slide format tiles, with tiles that are exact crops of the source pixels at native mpp."""

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from wsi_hcc.cli.app import main
from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.store.patch_store import TileReader, open_store
from wsi_hcc.tiling.config import TileConfig
from wsi_hcc.tiling.inputs import collect_slides, images_in_folders

TILE_PX = 128


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _tile_args(mpp):
    return ["--mpp", mpp, "--tile-px", TILE_PX, "--min-tissue", "0", "--compression", "none"]


def _assert_tiles_are_crops(store, source: np.ndarray) -> dict:
    """Every tile equals the source at its coordinates; the grid covers the source's whole tiles."""
    group = open_store(store)
    coords = group["coords"][:]
    rows, cols = source.shape[0] // TILE_PX, source.shape[1] // TILE_PX
    assert len(coords) == rows * cols
    reader = TileReader(store)
    for i, (x, y) in enumerate(coords.tolist()):
        np.testing.assert_array_equal(reader[i], source[y:y + TILE_PX, x:x + TILE_PX], err_msg=f"tile {i} at {x},{y}")
    return group.attrs["wsi_hcc"]["slide"]


def test_dicom_wsi_folder_tiles_as_one_slide_named_after_it(tmp_path, region_rgb, dicomize):
    source = tmp_path / "source.tif"
    tifffile.imwrite(source, region_rgb, photometric="rgb", tile=(256, 256),
                     resolution=(1e4 / 0.2527, 1e4 / 0.2527), resolutionunit="CENTIMETER")
    folder = tmp_path / "slides" / "case-007"
    files = dicomize(source, folder)
    assert len(files) >= 2  # a level per file: the folder, not a file, is the slide
    result = _cli("tile", folder, "--out", tmp_path / "out", *_tile_args(0.2527))
    assert result.exit_code == 0, result.output
    slide = _assert_tiles_are_crops(tmp_path / "out" / "case-007.zarr", region_rgb)
    assert slide["path"] == str(folder.resolve()) and slide["backend"] == "openslide"
    assert slide["mpp_source"] == "properties" and slide["slide_mpp"] == pytest.approx(0.2527, rel=1e-9)
    state = json.loads((tmp_path / "out" / "case-007.state.json").read_text())
    assert state["status"] == "done" and state["fingerprint"] == slide["fingerprint"]
    # the folder of DICOM folders finds it too, and a rerun sees it is done
    again = _cli("tile", tmp_path / "slides", "--out", tmp_path / "out", *_tile_args(0.2527))
    assert again.exit_code == 0, again.output
    manifest = json.loads((tmp_path / "out" / "run-manifest.json").read_text())
    assert manifest["summary"] == {"done": 0, "skipped": 1, "failed": 0}


def test_dicom_folders_are_found_beside_slide_files(tmp_path, dicomize, region_rgb):
    source = tmp_path / "in" / "plain.tif"
    source.parent.mkdir()
    tifffile.imwrite(source, region_rgb[:256, :256], photometric="rgb", tile=(256, 256),
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    dicomize(source, tmp_path / "in" / "dicom-a")
    dicomize(source, tmp_path / "in" / "deeper" / "dicom-b")
    (tmp_path / "in" / ".hidden").mkdir()
    flat = [(t.path.name, t.stem) for t in collect_slides([tmp_path / "in"])]
    assert flat == [("dicom-a", "dicom-a"), ("plain.tif", "plain")]
    deep = [t.stem for t in collect_slides([tmp_path / "in"], recursive=True)]
    assert deep == ["dicom-b", "dicom-a", "plain"]  # path order: in/deeper/dicom-b first


def test_ome_tiff_tiles_at_its_ome_xml_mpp(tmp_path, region_rgb):
    path = tmp_path / "region.ome.tif"
    tifffile.imwrite(path, region_rgb, photometric="rgb", tile=(256, 256),
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.2527, "PhysicalSizeY": 0.2527,
                               "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    config = TileConfig(target_mpp=0.2527, tile_px=TILE_PX, min_tissue=0, compression="none")
    report = run_tile([path], tmp_path / "out", config)
    assert [o.status for o in report.outcomes] == ["done"], report.outcomes
    slide = _assert_tiles_are_crops(tmp_path / "out" / "region.zarr", region_rgb)
    assert slide["mpp_source"] == "ome-xml" and slide["slide_mpp"] == 0.2527


def test_png_region_image_tiles_with_the_override_and_fails_in_one_line_without(tmp_path, region_rgb):
    path = tmp_path / "region.png"
    Image.fromarray(region_rgb).save(path)
    without = _cli("tile", path, "--out", tmp_path / "out", *_tile_args(0.25))
    assert without.exit_code == 1
    (failed,) = [line for line in without.output.splitlines() if line.startswith("FAILED")]
    assert "region.png" in failed and "pass --slide-mpp" in failed and "Traceback" not in without.output
    result = _cli("tile", path, "--out", tmp_path / "out", "--slide-mpp", "0.25", *_tile_args(0.25))
    assert result.exit_code == 0, result.output
    slide = _assert_tiles_are_crops(tmp_path / "out" / "region.zarr", region_rgb)
    assert slide["backend"] == "pillow" and slide["mpp_source"] == "override" and slide["slide_mpp"] == 0.25


def test_png_with_phys_tiles_at_its_own_mpp(tmp_path, region_rgb):
    path = tmp_path / "region.png"
    Image.fromarray(region_rgb).save(path, dpi=(25400 / 0.5, 25400 / 0.5))
    report = run_tile([path], tmp_path / "out", TileConfig(target_mpp=0.5, tile_px=TILE_PX, min_tissue=0,
                                                           compression="none"))
    assert [o.status for o in report.outcomes] == ["done"], report.outcomes
    slide = _assert_tiles_are_crops(tmp_path / "out" / "region.zarr", region_rgb)
    assert slide["mpp_source"] == "properties" and slide["slide_mpp"] == pytest.approx(0.5)


def test_jpeg_region_image_tiles_to_pillows_pixels(tmp_path, region_rgb):
    path = tmp_path / "region.jpg"
    Image.fromarray(region_rgb).save(path, quality=95)
    result = _cli("tile", path, "--out", tmp_path / "out", "--slide-mpp", "0.25", *_tile_args(0.25))
    assert result.exit_code == 0, result.output
    _assert_tiles_are_crops(tmp_path / "out" / "region.zarr", np.asarray(Image.open(path).convert("RGB")))


def test_plain_stripped_tiff_region_tiles_with_the_override(tmp_path, region_rgb):
    path = tmp_path / "region.tif"
    tifffile.imwrite(path, region_rgb, photometric="rgb")  # strips, no resolution: a plain region image
    result = _cli("tile", path, "--out", tmp_path / "out", "--slide-mpp", "0.2527", *_tile_args(0.2527))
    assert result.exit_code == 0, result.output
    slide = _assert_tiles_are_crops(tmp_path / "out" / "region.zarr", region_rgb)
    assert slide["mpp_source"] == "override" and slide["level_dimensions"] == [[800, 600]]


def test_images_in_a_folder_are_skipped_with_a_note_naming_them_and_how_to_include_them(tmp_path, region_rgb):
    folder = tmp_path / "jpgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.PNG", "sub/c.jpeg"):
        Image.fromarray(region_rgb[:256, :256]).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    assert collect_slides([folder]) == []
    assert [p.name for p in images_in_folders([folder])] == ["a.jpg", "b.PNG"]
    assert [p.name for p in images_in_folders([folder], recursive=True)] == ["a.jpg", "b.PNG", "c.jpeg"]
    assert images_in_folders([folder / "a.jpg"]) == []  # named as a file, the image is a slide, not skipped
    result = _cli("tile", folder, "--out", tmp_path / "out")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert "no slides found in the given paths" in lines
    note = lines[-1]
    assert note.startswith("note: 2 PNG/JPEG images in the given folders skipped") and str(folder / "a.jpg") in note
    assert f"name images as files to include them (e.g. {folder}/*.jpg)" in note
    assert _cli("tile", folder / "a.jpg", "--out", tmp_path / "out2", "--slide-mpp", "0.5",
                *_tile_args(0.5)).exit_code == 0
