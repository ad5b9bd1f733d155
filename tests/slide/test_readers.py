import numpy as np
import pytest

from wsi_hcc.errors import MppError, SlideError
from wsi_hcc.slide.jpeg_tiles import open_jpeg_levels
from wsi_hcc.slide.mpp import resolve_mpp
from wsi_hcc.slide.readers import open_slide, preferred_backends
from wsi_hcc.slide.readers.openslide_reader import OpenSlideReader
from wsi_hcc.slide.readers.tiff_probe import probe_tiff
from wsi_hcc.slide.readers.tiffslide_reader import TiffSlideReader

REGIONS = [((0, 0), (240, 240)), ((100, 37), (700, 500)), ((1900, 2700), (320, 267))]


def test_both_backends_return_the_same_pixels_on_the_real_svs(real_svs):
    a, b = OpenSlideReader(real_svs), TiffSlideReader(real_svs)
    assert a.level_dimensions == b.level_dimensions == ((2220, 2967),)
    for location, size in REGIONS:
        pa, pb = a.read_region(location, 0, size), b.read_region(location, 0, size)
        assert pa.shape == (size[1], size[0], 3) and pa.dtype == np.uint8
        np.testing.assert_array_equal(pa, pb)


def test_direct_jpeg_decode_matches_openslide(real_svs):
    reader = OpenSlideReader(real_svs)
    (level,) = open_jpeg_levels(real_svs, reader.level_dimensions)
    assert level is not None and level.tile_size == (240, 240) and level.jpeg_colorspace == "RGB"
    for (x, y), (w, h) in REGIONS:
        np.testing.assert_array_equal(level.region(x, y, w, h), reader.read_region((x, y), 0, (w, h)))


def test_metadata_mpp_from_both_backends(real_svs):
    for reader in (OpenSlideReader(real_svs), TiffSlideReader(real_svs)):
        assert reader.vendor == "aperio"
        assert reader.property_mpp() == (0.499, 0.499)
        assert resolve_mpp(reader) == (0.499, "properties")


def test_auto_prefers_tiffslide_for_jpeg_svs_and_falls_back(real_svs, monkeypatch):
    assert preferred_backends(probe_tiff(real_svs), "auto") == ("tiffslide", "openslide")
    assert preferred_backends(None, "auto") == ("openslide", "tiffslide")
    assert open_slide(real_svs).backend == "tiffslide"

    def broken(path):
        raise SlideError("tiffslide cannot open it: simulated")

    import wsi_hcc.slide.readers as readers

    monkeypatch.setitem(readers._OPENERS, "tiffslide", broken)
    assert open_slide(real_svs).backend == "openslide"
    with pytest.raises(SlideError, match="simulated"):
        open_slide(real_svs, "tiffslide")


def test_override_wins_and_is_recorded(real_svs):
    reader = OpenSlideReader(real_svs)
    assert resolve_mpp(reader, 0.25) == (0.25, "override")
    assert resolve_mpp(reader, 0.3, "manifest") == (0.3, "manifest")


@pytest.mark.parametrize("bad", [0.0, 0.001, 254.0, -1.0])
def test_implausible_override_is_rejected(real_svs, bad):
    with pytest.raises(MppError, match="implausible.*from override.*; correct --slide-mpp"):
        resolve_mpp(OpenSlideReader(real_svs), bad)
    with pytest.raises(MppError, match="from manifest.*; correct the mpp column of the CSV manifest"):
        resolve_mpp(OpenSlideReader(real_svs), bad, "manifest")


def test_missing_mpp_names_the_override(synth_slide_no_mpp):
    for backend in ("openslide", "tiffslide"):
        with pytest.raises(MppError, match="--slide-mpp"):
            resolve_mpp(open_slide(synth_slide_no_mpp, backend))


def test_tiff_resolution_tags_are_the_fallback(blank_tiff):
    reader = open_slide(blank_tiff, "openslide")
    assert reader.property_mpp() is None or reader.property_mpp() == pytest.approx((0.5, 0.5))
    mpp, source = resolve_mpp(reader)
    assert mpp == pytest.approx(0.5)
    assert source in ("properties", "tiff-resolution")


def test_tiff_resolution_fallback_when_backend_has_none(blank_tiff, monkeypatch):
    reader = open_slide(blank_tiff, "openslide")
    monkeypatch.setattr(reader, "property_mpp", lambda: None)
    assert resolve_mpp(reader) == (pytest.approx(0.5), "tiff-resolution")


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a slide\n"])
def test_unreadable_files_give_one_line(tmp_path, content):
    path = tmp_path / "bad.svs"
    path.write_bytes(content)
    with pytest.raises(SlideError) as info:
        open_slide(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_missing_file(tmp_path):
    with pytest.raises(SlideError, match="file not found"):
        open_slide(tmp_path / "nope.svs")


def test_per_tile_reduction_equals_reducing_the_region(synth_slide):
    from PIL import Image

    from wsi_hcc.slide.jpeg_tiles import ReducedJpegLevel

    reader = OpenSlideReader(synth_slide)
    level = open_jpeg_levels(synth_slide, reader.level_dimensions)[0]
    reduced = ReducedJpegLevel(level, 2)
    assert reduced.tile_size == (128, 128) and reduced.size == (2048, 1536)
    for x, y, w, h in [(0, 0, 224, 224), (100, 77, 300, 250), (1800, 1300, 248, 236)]:
        full = level.region(2 * x, 2 * y, 2 * w, 2 * h)
        np.testing.assert_array_equal(reduced.region(x, y, w, h), np.asarray(Image.fromarray(full).reduce(2)))
    with pytest.raises(ValueError):
        ReducedJpegLevel(level, 3)
