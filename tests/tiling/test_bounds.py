"""Settings and slides that would make tissue detection run for minutes are refused in one line."""

from pathlib import Path

import pytest

from wsi_hcc.errors import ConfigError, SlideError
from wsi_hcc.slide.thumbnail import read_thumbnail
from wsi_hcc.tiling.config import load_config


@pytest.mark.parametrize("value", ["0", "0.001", "-1", ".nan", "1000"])
def test_a_thumbnail_mpp_out_of_bounds_is_one_line(tmp_path, value):
    config = tmp_path / "tile.yaml"
    config.write_text(f"tile:\n  tissue:\n    thumbnail_mpp: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value).startswith(f"{config}: tissue.thumbnail_mpp must be between 0.5 and 256")


class _NoPyramid:
    """A 1,000,000 x 1,000,000 px slide with no coarser level (only what read_thumbnail asks first)."""

    path = Path("huge.tif")
    level_downsamples = (1.0,)
    level_dimensions = ((1_000_000, 1_000_000),)

    def read_region(self, *args):
        raise AssertionError("must refuse before reading")


def test_a_huge_slide_without_a_pyramid_is_refused_before_reading():
    with pytest.raises(SlideError, match="huge.tif: the thumbnail at 8 um/px would be read from level 0 "
                                         "\\(1000000 x 1000000 px, no coarser level\\); add a pyramid"):
        read_thumbnail(_NoPyramid(), 0.25, 8.0)


def test_a_header_claiming_two_billion_pixels_a_side_is_one_line(tmp_path):
    """Once a MemoryError: a 256 px TIFF whose header says 2e9 x 2e9 px, no pyramid."""
    import struct

    import numpy as np
    import tifffile
    from click.testing import CliRunner

    from wsi_hcc.cli import main

    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((256, 256, 3), np.uint8), tile=(256, 256), photometric="rgb",
                     resolution=(40000, 40000), resolutionunit="CENTIMETER")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        offsets = [tif.pages[0].tags[name].valueoffset for name in ("ImageWidth", "ImageLength")]
    for offset in offsets:
        data[offset:offset + 4] = struct.pack("<I", 2_000_000_000)
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["tile", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"FAILED {path}: the thumbnail at 8 um/px would be read from level 0 (2000000000 x 2000000000 px" in (
        result.output)


def test_a_bad_command_line_value_is_named_by_its_flag():
    from wsi_hcc.tiling.config import TileConfig

    with pytest.raises(ConfigError, match="^command-line options: --mpp: Input should be greater than 0"):
        TileConfig().with_overrides(target_mpp=0)
