"""Plain zarr reads a patch store in a process that never imports wsi_hcc (numcodecs entry point)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.store.patch_store import TileReader
from wsi_hcc.tiling.config import TileConfig

_PLAIN_ZARR = textwrap.dedent("""
    import sys
    import numpy as np
    import zarr

    group = zarr.open_group(sys.argv[1], mode="r")
    assert sorted(group.array_keys()) == ["coords", "tiles", "tissue_fraction"], list(group.array_keys())
    np.save(sys.argv[2], group["tiles"][0])
    print(group["tiles"].metadata.compressor.codec_id)
    assert "wsi_hcc" not in sys.modules, "wsi_hcc was imported"
""")


@pytest.mark.parametrize("pass_through", [False, True], ids=["re-encoded", "slide-jpeg-bytes"])
def test_plain_zarr_in_a_fresh_process_reads_the_librarys_tiles(synth_slide, tmp_path, pass_through):
    # pass-through stores keep the slide's own JPEG bytes: same codec id, other colour-space settings
    config = TileConfig(target_mpp=0.25, min_tissue=0, pass_through=pass_through)
    report = run_tile([synth_slide], tmp_path / "out", config)
    assert [o.status for o in report.outcomes] == ["done"], report.outcomes
    store = tmp_path / "out" / "synthetic.zarr"
    out = tmp_path / "tile0.npy"
    result = subprocess.run([sys.executable, "-c", _PLAIN_ZARR, str(store), str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imagecodecs_jpeg"
    library_tile = TileReader(store)[0]
    assert library_tile.std() > 0  # a real tile, not the fill value
    np.testing.assert_array_equal(np.load(out), library_tile)
