"""RGB-coded JPEG tiles (Aperio) through simplejpeg with an Adobe marker, and decoding at 1/2-1/8 scale."""

import imagecodecs
import numpy as np
import pytest

from wsi_hcc.slide.jpeg_tiles import ReducedJpegLevel, open_jpeg_levels
from wsi_hcc.slide.thumbnail import reduce_by


@pytest.fixture
def rgb_level(real_svs):
    level = open_jpeg_levels(real_svs, ((2220, 2967),))[0]
    assert level is not None and level.jpeg_colorspace == "RGB" and level.tile_size == (240, 240)
    return level


def _imagecodecs(level, col, row):
    return imagecodecs.jpeg8_decode(level.raw(col, row), colorspace="RGB", outcolorspace="RGB")


def test_rgb_tiles_decode_to_imagecodecs_pixels_exactly(rgb_level):
    assert rgb_level._rgb_marker_works()
    for col, row in [(0, 0), (4, 6), (9, 12)]:
        np.testing.assert_array_equal(rgb_level.decode(col, row), _imagecodecs(rgb_level, col, row))


def test_without_a_working_marker_rgb_tiles_take_the_imagecodecs_path(rgb_level):
    rgb_level._rgb_marker_ok = False
    assert not rgb_level.can_decode_scaled(2)
    np.testing.assert_array_equal(rgb_level.decode(4, 6), _imagecodecs(rgb_level, 4, 6))
    with pytest.raises(ValueError, match="cannot decode"):
        rgb_level.decode_scaled(4, 6, 2)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_scaled_decode_is_close_to_the_area_mean(rgb_level, factor):
    scaled = rgb_level.decode_scaled(4, 6, factor)
    area = reduce_by(_imagecodecs(rgb_level, 4, 6), factor)
    assert scaled.shape == area.shape == (240 // factor, 240 // factor, 3)
    assert np.abs(scaled.astype(np.int16) - area).mean() <= 1.0


def test_scaled_levels_refuse_factors_the_decoder_cannot_do(rgb_level):
    assert not rgb_level.can_decode_scaled(3) and not rgb_level.can_decode_scaled(16)
    with pytest.raises(ValueError):
        ReducedJpegLevel(rgb_level, 16, scaled=True)  # 240 px tiles: 16 does not divide them
    reduced = ReducedJpegLevel(rgb_level, 2, scaled=True)
    assert reduced.size == (1110, 1484)  # 2967 / 2 rounded up: edge tiles decode whole
    assert reduced.region(0, 0, 300, 200).shape == (200, 300, 3)
