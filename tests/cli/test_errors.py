"""Inputs and conditions that once gave a traceback (issue 18's sweep) give one line that names the
file and the fix."""

import errno
import gzip
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsi_hcc.cli import main
from wsi_hcc.errors import WsiHccError


def _one_line(result, *expected):
    assert result.exit_code in (1, 2), result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    last = result.output.strip().splitlines()[-1]
    for text in expected:
        assert text in last, last
    return last


def test_a_full_disk_while_writing_is_one_line_with_the_fix(real_svs, tmp_path, monkeypatch):
    import wsi_hcc.utils.runs as runs

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runs, "atomic_write_json", full)
    result = CliRunner().invoke(main, ["tile", str(real_svs), "--out", str(tmp_path / "out")])
    _one_line(result, "No space left on device; free space and run the same command again")


def test_a_symlink_loop_is_named(tmp_path):
    os.symlink(tmp_path / "b.svs", tmp_path / "a.svs")
    os.symlink(tmp_path / "a.svs", tmp_path / "b.svs")
    result = CliRunner().invoke(main, ["tile", str(tmp_path / "a.svs"), "--out", str(tmp_path / "out")])
    _one_line(result, f"{tmp_path / 'a.svs'}: a symbolic link that leads nowhere (or back to itself)")


def test_a_binary_config_is_one_line(real_svs, tmp_path):
    (tmp_path / "c.yaml").write_bytes(bytes(range(256)))
    result = CliRunner().invoke(main, ["tile", str(real_svs), "--config", str(tmp_path / "c.yaml"),
                                       "--out", str(tmp_path / "out")])
    _one_line(result, f"{tmp_path / 'c.yaml'}: not a text file; pass a YAML config file")


def test_corrupt_safetensors_for_a_model_card_is_one_line(real_svs, tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    result = CliRunner().invoke(main, ["tile", str(real_svs), "--for-model", str(tmp_path / "bad.safetensors"),
                                       "--out", str(tmp_path / "out")])
    _one_line(result, "bad.safetensors: not a readable safetensors file")


def test_a_truncated_geojson_gz_is_one_line_not_aborted(tmp_path):
    from wsi_hcc.qupath.annotations import read_qupath_geojson

    path = tmp_path / "a.geojson.gz"
    path.write_bytes(gzip.compress(b'{"type": "FeatureCollection", "features": []}')[:-12])
    with pytest.raises(WsiHccError, match="a.geojson.gz: not a readable GeoJSON file"):
        read_qupath_geojson(path)


def test_a_manifest_row_without_a_path_names_its_line(tmp_path):
    (tmp_path / "m.csv").write_text("path,mpp\na.svs,0.5\n,0.5\n")
    result = CliRunner().invoke(main, ["tile", str(tmp_path / "m.csv"), "--out", str(tmp_path / "out")])
    _one_line(result, f"{tmp_path / 'm.csv'}:3: empty path; fill in the slide's path or remove the row")


def test_a_folder_named_like_a_slide_is_named(tmp_path):
    (tmp_path / "x.svs").mkdir()
    result = CliRunner().invoke(main, ["tile", str(tmp_path / "x.svs"), "--out", str(tmp_path / "out")])
    _one_line(result, f"{tmp_path / 'x.svs'}: is a folder, not a slide file; pass the slide file itself")


@pytest.mark.parametrize("args", [
    ["synth", "{out}/s.svs", "--width", "512", "--height", "512"],
    ["radiology", "phantom", "--out", "{out}/ph", "--shape", "28", "72", "72"],
    ["augment-preview", "{png}", "--config", "{config}", "--out", "{out}/p.png", "--n", "2", "--tile-px", "64"],
])
def test_a_read_only_output_is_one_line(tmp_path, monkeypatch, args):
    """Root may write anywhere, so the read-only disk is simulated where every output ends: the rename."""
    import numpy as np
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "patch.png")

    def read_only(src, dst, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    def read_only_file(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(a[0]))

    monkeypatch.setattr(os, "replace", read_only)
    monkeypatch.setattr("tifffile.imwrite", read_only_file)
    config = Path(__file__).parents[2] / "configs" / "augment" / "chen2022.yaml"
    argv = [a.format(out=tmp_path / "ro", png=tmp_path / "patch.png", config=config) for a in args]
    result = CliRunner().invoke(main, argv)
    _one_line(result, "Read-only file system; the disk is read-only: choose another --out")
