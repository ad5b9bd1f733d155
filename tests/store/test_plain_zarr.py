"""Plain zarr reads a patch store through the numcodecs entry points, importing only the codec module
of wsi_hcc (wsi_hcc.store.tile_pack: chunks of several tiles) and nothing heavy."""

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
    codec = group["tiles"].metadata.compressor
    print(codec.codec_id, codec.get_config()["tile_codec"]["id"], group["tiles"].chunks[0])
    light = {"wsi_hcc", "wsi_hcc.store", "wsi_hcc.store.tile_pack", "wsi_hcc.utils", "wsi_hcc.utils.lazy"}
    imported = {name for name in sys.modules if name.split(".")[0] in ("wsi_hcc", "torch", "PIL")}
    assert imported <= light, sorted(imported - light)
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
    assert result.stdout.split() == ["wsi_hcc_tilepack", "imagecodecs_jpeg", str(config.chunk_tiles)]
    library_tile = TileReader(store)[0]
    assert library_tile.std() > 0  # a real tile, not the fill value
    np.testing.assert_array_equal(np.load(out), library_tile)


_PLAIN_ZARR_NO_WSI_HCC = textwrap.dedent("""
    import sys
    import numpy as np
    import zarr

    tiles = zarr.open_group(sys.argv[1], mode="r")["tiles"]
    np.save(sys.argv[2], tiles[:])
    print(tiles.metadata.compressor.codec_id, tiles.chunks[0])
    assert not any(name.split(".")[0] == "wsi_hcc" for name in sys.modules), "wsi_hcc was imported"
""")


def test_one_tile_per_chunk_is_the_classic_layout_zarr_reads_without_wsi_hcc(synth_slide, tmp_path):
    config = TileConfig(target_mpp=0.5, min_tissue=0, chunk_tiles=1, qc=False)
    report = run_tile([synth_slide], tmp_path / "out", config)
    assert [o.status for o in report.outcomes] == ["done"], report.outcomes
    store = tmp_path / "out" / "synthetic.zarr"
    out = tmp_path / "tiles.npy"
    result = subprocess.run([sys.executable, "-c", _PLAIN_ZARR_NO_WSI_HCC, str(store), str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["imagecodecs_jpeg", "1"]
    reader = TileReader(store)
    plain = np.load(out)
    assert plain.shape[0] == len(reader) > 1 and plain.std() > 0
    np.testing.assert_array_equal(plain, np.stack([reader[i] for i in range(len(reader))]))
