"""Tests for the synthetic H&E slide generator (`wsi_hcc.synth`)."""

from __future__ import annotations

import json
import math

import numpy as np
import openslide
import pytest
import tifffile
import tiffslide
from PIL import Image

from wsi_hcc.errors import WsiHccError
from wsi_hcc.synth import MASK_LABELS, SyntheticSlide, write_synthetic_slide

# Awkward on purpose: neither side is a multiple of the tile size, and the long side gives three
# levels (4100 -> 1025 -> 257).
SIZE_PX = (4100, 3000)
MPP = 0.25


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    path = tmp_path_factory.mktemp("synth") / "main.svs"
    return write_synthetic_slide(path, size_px=SIZE_PX, mpp=MPP, seed=1)


@pytest.fixture(scope="module")
def level0_rgb(slide: SyntheticSlide) -> np.ndarray:
    with openslide.OpenSlide(str(slide.path)) as osr:
        return np.asarray(osr.read_region((0, 0), 0, slide.size_px).convert("RGB"))


@pytest.fixture(scope="module")
def mask(slide: SyntheticSlide) -> np.ndarray:
    return np.asarray(Image.open(slide.mask_path))


def _hematoxylin_od(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin optical density by colour deconvolution; float32 (h, w)."""
    from wsi_hcc.synth.scene import _OD_EOSIN, _OD_HEMATOXYLIN

    stains = np.stack([_OD_HEMATOXYLIN, _OD_EOSIN, np.cross(_OD_HEMATOXYLIN, _OD_EOSIN)])
    to_hema = np.linalg.inv(stains)[:, 0].astype(np.float32)
    od = -np.log((np.arange(256, dtype=np.float32) + 1) / 256)  # per grey level
    return sum(od[rgb[..., c]] * to_hema[c] for c in range(3))


def _block_means(values: np.ndarray, downsample: int) -> np.ndarray:
    """Mean of a level-0 (h, w) array over each whole ``downsample`` block; (h // ds, w // ds).

    Row/column ``i`` matches mask pixel ``i``; partial blocks at the right and bottom are dropped.
    """
    mh, mw = values.shape[0] // downsample, values.shape[1] // downsample
    blocks = values[: mh * downsample, : mw * downsample].astype(np.float32)
    return blocks.reshape(mh, downsample, mw, downsample).mean(axis=(1, 3))


def _interior(labels: np.ndarray, value: int) -> np.ndarray:
    """Mask pixels with ``value`` whose 8 neighbours have it too (away from boundaries)."""
    m = labels == value
    inner = m.copy()
    inner[1:-1, 1:-1] &= (
        m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
        & m[:-2, :-2] & m[:-2, 2:] & m[2:, :-2] & m[2:, 2:]
    )
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    return inner


def test_result_describes_what_was_written(slide: SyntheticSlide) -> None:
    assert slide.path.is_file()
    assert slide.mask_path == slide.path.with_name("main.mask.png")
    assert slide.mask_path.is_file()
    assert slide.size_px == SIZE_PX
    assert slide.mpp == MPP
    assert slide.mask_downsample == 32
    assert slide.level_downsamples == (1, 4, 16)


def test_openslide_sees_aperio_with_mpp(slide: SyntheticSlide) -> None:
    with openslide.OpenSlide(str(slide.path)) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "aperio"
        assert float(props["openslide.mpp-x"]) == MPP
        assert float(props["openslide.mpp-y"]) == MPP
        assert props["openslide.objective-power"] == "40"
        assert osr.dimensions == SIZE_PX
        assert "thumbnail" in osr.associated_images


def test_levels_and_downsamples(slide: SyntheticSlide) -> None:
    width, height = SIZE_PX
    expected = tuple((math.ceil(width / d), math.ceil(height / d)) for d in (1, 4, 16))
    with openslide.OpenSlide(str(slide.path)) as osr:
        assert osr.level_count == len(slide.level_downsamples) == 3
        assert osr.level_dimensions == expected
        assert osr.level_downsamples == pytest.approx(slide.level_downsamples, rel=0.01)
        assert int(osr.properties["openslide.level[0].tile-width"]) == 256
    with tiffslide.TiffSlide(slide.path) as tsl:
        assert tsl.level_dimensions == expected
        assert tsl.properties["tiffslide.vendor"] == "aperio"
        assert tsl.properties["tiffslide.mpp-x"] == pytest.approx(MPP)


def test_tiff_structure_is_aperio_like(slide: SyntheticSlide) -> None:
    with tifffile.TiffFile(slide.path) as tif:
        pages = list(tif.pages)
        assert pages[0].description.startswith("Aperio Image Library")
        assert "|MPP = 0.25|" in pages[0].description
        assert [p.is_tiled for p in pages] == [True, False, True, True]  # level 0, thumbnail, ...
        for page in pages:
            assert page.compression == tifffile.COMPRESSION.JPEG
            # tifffile stores RGB input as YCbCr 4:2:0 JPEG and says so in the tags
            assert page.photometric == tifffile.PHOTOMETRIC.YCBCR
        assert pages[0].tilewidth == pages[0].tilelength == 256


def test_openslide_and_tiffslide_decode_the_same_pixels(
    slide: SyntheticSlide, level0_rgb: np.ndarray
) -> None:
    with tiffslide.TiffSlide(slide.path) as tsl:
        ts = np.asarray(tsl.read_region((0, 0), 0, SIZE_PX))[..., :3]
    assert ts.shape == level0_rgb.shape == (SIZE_PX[1], SIZE_PX[0], 3)
    # Same JPEG data through two decoders; allow one grey level of IDCT rounding.
    diff = np.abs(ts.astype(int) - level0_rgb.astype(int))
    assert diff.max() <= 1
    assert diff.mean() < 0.01


def test_decoded_colours_match_the_generator(slide: SyntheticSlide, level0_rgb: np.ndarray) -> None:
    # A YCbCr / RGB mix-up would shift colours by tens of grey levels.
    from wsi_hcc.synth.scene import _Scene

    scene = _Scene(SIZE_PX, MPP, 1, 0.6, True)
    x0, y0, w, h = 1000, 1000, 1500, 1200
    expected = scene.render(x0, y0, w, h).astype(int)
    got = level0_rgb[y0:y0 + h, x0:x0 + w].astype(int)
    assert np.abs(got - expected).mean() < 2.0
    assert np.abs((got - expected).mean(axis=(0, 1))).max() < 0.5


def test_level1_is_the_box_mean_of_level0(slide: SyntheticSlide, level0_rgb: np.ndarray) -> None:
    width, height = SIZE_PX
    ho, wo = height // 4, width // 4  # whole 4 x 4 blocks (both sides are multiples of 4 here)
    box = level0_rgb[: ho * 4, : wo * 4].reshape(ho, 4, wo, 4, 3).mean(axis=(1, 3))
    with openslide.OpenSlide(str(slide.path)) as osr:
        level1 = np.asarray(osr.read_region((0, 0), 1, (wo, ho)).convert("RGB")).astype(float)
    assert np.abs(level1 - box).mean() < 4.0  # two JPEG generations apart
    assert np.abs((level1 - box).mean(axis=(0, 1))).max() < 1.0


def test_mask_shape_and_labels(slide: SyntheticSlide, mask: np.ndarray) -> None:
    width, height = SIZE_PX
    assert mask.dtype == np.uint8
    assert mask.shape == (math.ceil(height / 32), math.ceil(width / 32))
    assert set(np.unique(mask).tolist()) == {0, 1, 2}
    assert np.mean(mask > 0) == pytest.approx(0.6, abs=0.1)


def test_sidecar_json(slide: SyntheticSlide, mask: np.ndarray) -> None:
    params = json.loads(slide.path.with_name("main.synth.json").read_text())
    assert params["size_px"] == list(SIZE_PX)
    assert params["mpp"] == MPP
    assert params["seed"] == 1
    assert params["mask_downsample"] == 32
    assert params["mask_size_px"] == [mask.shape[1], mask.shape[0]]
    assert params["level_downsamples"] == [1, 4, 16]
    assert {int(k): v for k, v in params["labels"].items()} == MASK_LABELS


def test_tumour_nuclei_are_darker_and_denser(level0_rgb: np.ndarray, mask: np.ndarray) -> None:
    hema = _hematoxylin_od(level0_rgb)
    mean_hema = _block_means(hema, 32)
    dark = _block_means(hema > 0.6, 32)
    labels = mask[: mean_hema.shape[0], : mean_hema.shape[1]]
    tumour, normal = _interior(labels, 2), _interior(labels, 1)
    assert tumour.sum() > 20 and normal.sum() > 20
    assert mean_hema[tumour].mean() > 1.3 * mean_hema[normal].mean()
    assert dark[tumour].mean() > 1.5 * dark[normal].mean()


def test_tumour_grade_grows_nuclear_size_darkness_and_crowding(tmp_path) -> None:
    """Grades 1 < 2 < 3 in haematoxylin density inside the tumour; the normal tissue is unchanged."""
    import openslide

    means = []
    for grade in (1, 2, 3):
        slide = write_synthetic_slide(tmp_path / f"g{grade}.svs", size_px=(1024, 1024), mpp=0.5, seed=5, grade=grade)
        with openslide.OpenSlide(str(slide.path)) as handle:
            rgb = np.asarray(handle.read_region((0, 0), 0, (1024, 1024)).convert("RGB"))
        mask = np.asarray(Image.open(slide.mask_path))
        hema = _block_means(_hematoxylin_od(rgb), 32)
        labels = mask[: hema.shape[0], : hema.shape[1]]
        tumour, normal = _interior(labels, 2), _interior(labels, 1)
        means.append((hema[tumour].mean(), hema[normal].mean()))
        assert json.loads(slide.path.with_name(f"g{grade}.synth.json").read_text())["grade"] == grade
    assert means[0][0] < means[1][0] < means[2][0]
    assert means[2][0] > 1.25 * means[0][0]
    assert max(m[1] for m in means) < 1.05 * min(m[1] for m in means)


def test_background_is_near_white_glass(level0_rgb: np.ndarray, mask: np.ndarray) -> None:
    means = np.stack([_block_means(level0_rgb[..., c], 32) for c in range(3)])
    labels = mask[: means.shape[1], : means.shape[2]]
    rgb = means[:, _interior(labels, 0)].mean(axis=1)
    assert np.all(np.abs(rgb - 240) < 3), rgb
    tissue = means[:, _interior(labels, 1)].mean(axis=1)
    assert tissue.mean() < 215  # stained tissue is clearly darker than glass


def test_regions_render_the_same_whole_or_in_pieces() -> None:
    # No seams: nuclei and textures depend on position only, not on the band or tile drawn.
    from wsi_hcc.synth.scene import _Scene

    scene = _Scene((2048, 2048), MPP, 5, 0.9, True)
    whole = scene.render(900, 900, 300, 260)
    top = np.concatenate(
        [scene.render(900, 900, 130, 70), scene.render(1030, 900, 170, 70)], axis=1
    )
    bottom = np.concatenate(
        [scene.render(900, 970, 130, 190), scene.render(1030, 970, 170, 190)], axis=1
    )
    pieces = np.concatenate([top, bottom], axis=0)
    assert np.array_equal(whole, pieces)
    assert (whole < 150).any()  # there are nuclei in this region


def test_no_mpp(tmp_path) -> None:
    result = write_synthetic_slide(tmp_path / "nompp.svs", size_px=(600, 400), mpp=None)
    assert result.mpp is None
    with openslide.OpenSlide(str(result.path)) as osr:
        assert osr.properties["openslide.vendor"] == "aperio"
        assert "openslide.mpp-x" not in osr.properties
        assert "openslide.mpp-y" not in osr.properties
        assert "MPP" not in osr.properties["openslide.comment"]
    with tiffslide.TiffSlide(result.path) as tsl:
        assert tsl.properties["tiffslide.mpp-x"] is None


def test_resolution_tags_without_mpp_in_description(tmp_path) -> None:
    result = write_synthetic_slide(
        tmp_path / "res.svs", size_px=(1200, 800), mpp=0.5, mpp_in_description=False,
        resolution_tags=True,
    )
    with openslide.OpenSlide(str(result.path)) as osr:
        assert "openslide.mpp-x" not in osr.properties
        assert osr.properties["tiff.ResolutionUnit"] == "centimeter"
        assert float(osr.properties["tiff.XResolution"]) == pytest.approx(1e4 / 0.5)
    with tifffile.TiffFile(result.path) as tif:
        level0, level1 = tif.pages[0], tif.pages[2]
        assert level0.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        for page, downsample in ((level0, 1), (level1, 4)):
            for tag in ("XResolution", "YResolution"):
                num, den = page.tags[tag].value
                assert 1e4 / (num / den) == pytest.approx(0.5 * downsample, rel=1e-3)


def test_no_tumour(tmp_path) -> None:
    result = write_synthetic_slide(tmp_path / "normal.svs", size_px=(800, 600), tumour=False)
    labels = np.asarray(Image.open(result.mask_path))
    assert set(np.unique(labels).tolist()) == {0, 1}


def test_same_arguments_give_identical_files(tmp_path) -> None:
    kwargs = dict(size_px=(1100, 700), mpp=0.5, seed=7, tile_px=128, mask_downsample=16)
    a = write_synthetic_slide(tmp_path / "a" / "x.svs", **kwargs)
    b = write_synthetic_slide(tmp_path / "b" / "x.svs", **kwargs)
    for name in ("x.svs", "x.mask.png", "x.synth.json"):
        assert (a.path.parent / name).read_bytes() == (b.path.parent / name).read_bytes()
    c = write_synthetic_slide(tmp_path / "c" / "x.svs", **{**kwargs, "seed": 8})
    assert c.path.read_bytes() != a.path.read_bytes()


@pytest.mark.parametrize(
    ("size_px", "tile_px"), [((1, 1), 16), ((301, 17), 16), ((17, 1100), 64), ((1030, 257), 256)]
)
def test_odd_sizes(tmp_path, size_px: tuple[int, int], tile_px: int) -> None:
    result = write_synthetic_slide(tmp_path / "odd.tif", size_px=size_px, tile_px=tile_px,
                                   mask_downsample=8)
    levels = [size_px]
    while max(levels[-1]) >= 1024:
        levels.append((math.ceil(levels[-1][0] / 4), math.ceil(levels[-1][1] / 4)))
    with openslide.OpenSlide(str(result.path)) as osr, tiffslide.TiffSlide(result.path) as tsl:
        assert osr.properties["openslide.vendor"] == "aperio"
        assert osr.level_dimensions == tsl.level_dimensions == tuple(levels)
        corner = (size_px[0] - 1, size_px[1] - 1)
        assert osr.read_region(corner, 0, (1, 1)).getpixel((0, 0))[3] == 255
    labels = np.asarray(Image.open(result.mask_path))
    assert labels.shape == (math.ceil(size_px[1] / 8), math.ceil(size_px[0] / 8))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size_px": (0, 10)},
        {"size_px": (10,)},
        {"size_px": (10.5, 10)},
        {"size_px": (True, 10)},
        {"mpp": 0.01},
        {"mpp": 25.0},
        {"mpp": float("nan")},
        {"mpp": "0.25"},
        {"tile_px": 100},
        {"tile_px": 0},
        {"jpeg_quality": 0},
        {"jpeg_quality": 101},
        {"seed": -1},
        {"tissue_fraction": 0.0},
        {"tissue_fraction": 1.5},
        {"mask_downsample": 0},
        {"mpp": None, "resolution_tags": True},
        {"grade": 4},
    ],
)
def test_bad_arguments_raise_one_line_errors(tmp_path, kwargs: dict) -> None:
    with pytest.raises(WsiHccError) as info:
        write_synthetic_slide(tmp_path / "bad.svs", **kwargs)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "bad.svs").exists()


def test_bad_suffix(tmp_path) -> None:
    with pytest.raises(WsiHccError, match="svs"):
        write_synthetic_slide(tmp_path / "bad.png", size_px=(100, 100))
