"""The command line and batch semantics: bad inputs, resume, kill safety, parallel equality."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_hcc.cli.app import main
from wsi_hcc.pipelines.tile import run_tile
from wsi_hcc.tiling.config import TileConfig


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _store_files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def _state(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}.state.json").read_text())


def test_help_has_an_example_and_does_not_import_torch():
    code = "import sys; from wsi_hcc.cli import main; sys.argv=['wsi-hcc','tile','--help']\n" \
           "try:\n main()\nexcept SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Examples:" in result.stdout and "wsi-hcc tile slides/ --out stores/" in result.stdout


def test_jpeg_subsampling_and_compression_flags_reach_the_store(real_svs, tmp_path):
    for flags, codec in ((["--jpeg-subsampling", "420", "--jpeg-quality", "80"], {"subsampling": "420", "level": 80}),
                         ([], {"subsampling": "444", "level": 90}), (["--compression", "zstd"], {"id": "zstd"})):
        out = tmp_path / "-".join(flags or ["default"])
        result = _cli("tile", real_svs, "--out", out, "--no-qc", *flags)
        assert result.exit_code == 0, result.output
        zarray = json.loads((out / "CMU-1-Small-Region.zarr" / "tiles" / ".zarray").read_text())
        assert codec.items() <= zarray["compressor"]["tile_codec"].items()
    assert "--jpeg-subsampling [444|422|420]" in _cli("tile", "--help").output


def test_the_command_line_adds_one_log_handler_however_often_it_runs(tmp_path):
    import logging

    for _ in range(3):
        assert CliRunner().invoke(main, ["synth", str(tmp_path / "s.svs"), "--width", "512", "--height", "512"]
                                  ).exit_code == 0
    handlers = [h for h in logging.getLogger("wsi_hcc").handlers if getattr(h, "_wsi_hcc_cli", False)]
    assert len(handlers) == 1


def test_version_lists_the_stack():
    result = _cli("--version")
    assert result.exit_code == 0
    assert "wsi-hcc" in result.output and "openslide-python" in result.output and "zarr" in result.output


def test_bad_inputs_each_fail_with_one_line_and_the_batch_goes_on(real_svs, synth_slide_no_mpp, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.svs").write_bytes(b"")
    (bad / "notes.svs").write_text("this is a text file\n")
    data = real_svs.read_bytes()
    (bad / "truncated.svs").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    result = _cli("tile", bad / "empty.svs", bad / "notes.svs", bad / "truncated.svs", bad / "missing.svs",
                  synth_slide_no_mpp, real_svs, "--out", out)
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 5, result.output
    expected = {"empty.svs": "empty", "notes.svs": "not a readable slide", "truncated.svs": "truncated",
                "missing.svs": "not found", "nompp.svs": "--slide-mpp"}
    for name, phrase in expected.items():
        (line,) = [f for f in failed if name in f]
        assert phrase in line
    assert "Traceback" not in result.output
    assert _state(out, "CMU-1-Small-Region")["status"] == "done"
    assert (out / "CMU-1-Small-Region.zarr").is_dir()
    assert _state(out, "truncated")["status"] == "failed"
    assert not (out / "truncated.zarr").exists()
    manifest = json.loads((out / "run-manifest.json").read_text())
    assert manifest["summary"] == {"done": 1, "skipped": 0, "failed": 5}


def test_missing_mpp_is_fixed_by_the_override(synth_slide_no_mpp, tmp_path):
    result = _cli("tile", synth_slide_no_mpp, "--out", tmp_path, "--slide-mpp", "0.25", "--min-tissue", "0")
    assert result.exit_code == 0, result.output
    state = _state(tmp_path, "nompp")
    assert state["status"] == "done" and state["n_tiles"] > 0


def test_manifest_mpp_column(synth_slide_no_mpp, tmp_path):
    manifest = tmp_path / "slides.csv"
    manifest.write_text(f"path,mpp\n{synth_slide_no_mpp},0.25\n")
    result = _cli("tile", manifest, "--out", tmp_path / "out", "--min-tissue", "0")
    assert result.exit_code == 0, result.output
    import zarr

    attrs = zarr.open_group(str(tmp_path / "out" / "nompp.zarr"), mode="r").attrs["wsi_hcc"]
    assert attrs["slide"]["mpp_source"] == "manifest" and attrs["slide"]["slide_mpp"] == 0.25


def test_unwritable_output_folder_is_one_line(real_svs, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _cli("tile", real_svs, "--out", blocker / "out")
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "cannot write the output folder" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_invalid_config_is_one_line(real_svs, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("tile:\n  tile_px: -3\n")
    result = _cli("tile", real_svs, "--out", tmp_path, "--config", config)
    assert result.exit_code == 2 and "tile_px" in result.output and str(config) in result.output


def test_rerun_skips_finished_slides_and_overwrite_redoes_them(real_svs, tmp_path):
    assert _cli("tile", real_svs, "--out", tmp_path).exit_code == 0
    store = tmp_path / "CMU-1-Small-Region.zarr"
    first = _store_files(store)
    again = _cli("tile", real_svs, "--out", tmp_path)
    assert again.exit_code == 0 and "1 skipped" in again.output
    redo = _cli("tile", real_svs, "--out", tmp_path, "--overwrite")
    assert redo.exit_code == 0 and "1 done" in redo.output
    assert _store_files(store) == first
    changed = _cli("tile", real_svs, "--out", tmp_path, "--tile-px", "128")
    assert "1 done" in changed.output  # a different config is not "finished"


def test_stem_collisions_are_errors_not_overwrites(real_svs, tmp_path):
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copy(real_svs, other / real_svs.name)
    result = _cli("tile", real_svs, other / real_svs.name, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.count("is shared by") == 2
    assert not (tmp_path / "out" / "CMU-1-Small-Region.zarr").exists()


def test_the_same_stem_in_a_later_run_is_an_error_naming_both_slides(tmp_path):
    from wsi_hcc.synth import write_synthetic_slide

    for folder, seed in (("a", 1), ("b", 2)):
        write_synthetic_slide(tmp_path / folder / "same.svs", size_px=(1024, 768), mpp=0.25, seed=seed)
    first = _cli("tile", tmp_path / "a" / "same.svs", "--out", tmp_path / "out")
    assert first.exit_code == 0, first.output
    kept = _store_files(tmp_path / "out" / "same.zarr")
    for extra in ([], ["--overwrite"]):
        second = _cli("tile", tmp_path / "b" / "same.svs", "--out", tmp_path / "out", *extra)
        assert second.exit_code == 1
        assert (f"{tmp_path / 'b' / 'same.svs'}: {tmp_path / 'out' / 'same.zarr'} already holds the tiles of another "
                f"slide, {tmp_path / 'a' / 'same.svs'}; rename one") in second.output
    assert _store_files(tmp_path / "out" / "same.zarr") == kept and _state(tmp_path / "out", "same")["path"] == str(
        tmp_path / "a" / "same.svs")
    moved = tmp_path / "moved" / "same.svs"  # the same file elsewhere is still this slide
    moved.parent.mkdir()
    shutil.copy(tmp_path / "a" / "same.svs", moved)
    assert _cli("tile", moved, "--out", tmp_path / "out").exit_code == 0


def test_a_corrected_mpp_tiles_the_slide_again(synth_slide_no_mpp, tmp_path):
    out = tmp_path / "out"
    assert _cli("tile", synth_slide_no_mpp, "--out", out, "--slide-mpp", "0.25").exit_code == 0
    again = _cli("tile", synth_slide_no_mpp, "--out", out, "--slide-mpp", "0.25")
    assert "1 skipped" in again.output
    corrected = _cli("tile", synth_slide_no_mpp, "--out", out, "--slide-mpp", "0.2527")
    assert corrected.exit_code == 0 and "1 done" in corrected.output, corrected.output
    assert _state(out, "nompp")["slide_mpp_override"] == 0.2527


def test_folder_input_and_recursive(real_svs, tmp_path):
    nested = tmp_path / "in" / "sub"
    nested.mkdir(parents=True)
    shutil.copy(real_svs, nested / "a.svs")
    flat = _cli("tile", tmp_path / "in", "--out", tmp_path / "o1")
    assert flat.exit_code == 1 and "no slides found" in flat.output
    deep = _cli("tile", tmp_path / "in", "--recursive", "--out", tmp_path / "o2")
    assert deep.exit_code == 0 and (tmp_path / "o2" / "a.zarr").is_dir()


_KILLER = textwrap.dedent("""
    import os, signal, sys
    import wsi_hcc.tiling.extract as extract
    kill_after = int(os.environ["KILL_AFTER_CHUNKS"])
    original = extract._write
    count = [0]
    def dying_write(store, chunk, data):
        count[0] += 1
        if count[0] == kill_after:
            with open(extract.chunk_path(store, chunk), "wb") as fh:
                fh.write(data[: len(data) // 2])  # die half-way through a chunk
            os.kill(os.getpid(), signal.SIGKILL)
        original(store, chunk, data)
    extract._write = dying_write
    from wsi_hcc.cli import main
    main(sys.argv[1:], prog_name="wsi-hcc")
""")


@pytest.mark.parametrize("kill_after", [1, 5, 13])  # of 14 chunks of 4 tiles (54 tiles, jobs of 16)
def test_killed_run_resumes_to_an_identical_store(synth_slide, tmp_path, kill_after):
    config = tmp_path / "small_jobs.yaml"
    config.write_text("tile:\n  job_tiles: 16\n  chunk_tiles: 4\n  min_tissue: 0\n  target_mpp: 0.5\n"
                      "  tile_px: 224\n")
    args = ["tile", str(synth_slide), "--config", str(config)]
    clean = tmp_path / "clean"
    assert _cli(*args, "--out", clean).exit_code == 0
    out = tmp_path / "killed"
    env = os.environ | {"KILL_AFTER_CHUNKS": str(kill_after)}
    killed = subprocess.run([sys.executable, "-c", _KILLER, *args, "--out", str(out)], env=env,
                            capture_output=True, text=True)
    assert killed.returncode == -9
    assert not (out / "synthetic.zarr").exists()  # nothing that looks finished
    assert (out / ".synthetic.zarr.partial").is_dir()
    resumed = _cli(*args, "--out", out)
    assert resumed.exit_code == 0, resumed.output
    assert not (out / ".synthetic.zarr.partial").exists()
    assert _store_files(out / "synthetic.zarr") == _store_files(clean / "synthetic.zarr")


def test_two_process_workers_equal_a_local_run(synth_slide, tmp_path):
    config = TileConfig(target_mpp=0.5, tile_px=224, min_tissue=0, job_tiles=32)
    run_tile([synth_slide], tmp_path / "local", config)
    report = run_tile([synth_slide], tmp_path / "pool", config, workers=2)
    assert report.count("done") == 1
    assert _store_files(tmp_path / "pool" / "synthetic.zarr") == _store_files(tmp_path / "local" / "synthetic.zarr")
    # The QC picture is drawn by whichever process takes its job: the same bytes.
    qc = [(tmp_path / run / "synthetic.qc.png").read_bytes() for run in ("local", "pool")]
    assert qc[0][:8] == b"\x89PNG\r\n\x1a\n" and qc[0] == qc[1]


def test_dask_local_cluster_equals_a_local_run(synth_slide, real_svs, tmp_path):
    from distributed import LocalCluster

    config = TileConfig(target_mpp=0.5, tile_px=224, min_tissue=0, job_tiles=32)
    slides = [synth_slide, real_svs]
    run_tile(slides, tmp_path / "local", config)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        report = run_tile(slides, tmp_path / "dask", config, scheduler=cluster.scheduler_address)
    assert report.count("done") == 2
    for stem in ("synthetic", "CMU-1-Small-Region"):
        assert _store_files(tmp_path / "dask" / f"{stem}.zarr") == _store_files(tmp_path / "local" / f"{stem}.zarr")


def test_slide_truncated_inside_its_tile_data_fails_before_any_work(synth_slide, tmp_path):
    data = synth_slide.read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    result = _cli("tile", cut, "--out", tmp_path / "out")
    assert result.exit_code == 1
    (line,) = [f for f in result.output.splitlines() if f.startswith("FAILED")]
    assert str(cut) in line and "truncated" in line
    assert not (tmp_path / "out" / ".cut.zarr.partial").exists()


def test_unreachable_scheduler_is_one_line(real_svs, tmp_path):
    result = _cli("tile", real_svs, "--out", tmp_path, "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 2
    assert result.output.startswith("error: cannot reach the dask scheduler at tcp://127.0.0.1:1")
    assert len(result.output.strip().splitlines()) == 1


def test_synth_command_writes_a_slide_that_tiles(tmp_path):
    result = _cli("synth", tmp_path / "demo.svs", "--width", "2048", "--height", "1536", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo.svs").is_file() and (tmp_path / "demo.mask.png").is_file()
    tiled = _cli("tile", tmp_path / "demo.svs", "--out", tmp_path / "out", "--min-tissue", "0.5")
    assert tiled.exit_code == 0, tiled.output
    assert _state(tmp_path / "out", "demo")["n_tiles"] > 0
    bad = _cli("synth", tmp_path / "x.svs", "--width", "0")
    assert bad.exit_code == 2 and bad.output.startswith("error: ")


def test_tiles_are_stain_normalised_as_they_are_written(real_svs, tmp_path):
    import zarr
    from conftest import SHARED_DATA
    from PIL import Image

    from wsi_hcc.slide.readers.openslide_reader import OpenSlideReader
    from wsi_hcc.stain.normalizers import MacenkoNormalizer

    reference = SHARED_DATA / "he_patches" / "torchstain_target.png"
    result = _cli("tile", real_svs, "--out", tmp_path, "--normalize", "macenko", "--reference", reference,
                  "--compression", "none", "--tile-px", "240", "--mpp", "0.499")
    assert result.exit_code == 0, result.output
    store = zarr.open_group(str(tmp_path / "CMU-1-Small-Region.zarr"), mode="r")
    attrs = store.attrs["wsi_hcc"]
    assert attrs["stain_reference"]["method"] == "macenko" and attrs["pass_through"] is False
    normalizer = MacenkoNormalizer().fit(np.asarray(Image.open(reference).convert("RGB")))
    x, y = (int(v) for v in store["coords"][0])
    raw = OpenSlideReader(real_svs).read_region((x, y), 0, (240, 240))
    np.testing.assert_array_equal(store["tiles"][0], normalizer.transform(raw))
    assert not np.array_equal(store["tiles"][0], raw)


def test_stain_reference_problems_stop_the_run_with_one_line(real_svs, tmp_path):
    missing = _cli("tile", real_svs, "--out", tmp_path, "--normalize", "reinhard")
    assert missing.exit_code == 2 and "--reference" in missing.output
    glass = tmp_path / "glass.png"
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 244, np.uint8)).save(glass)
    blank = _cli("tile", real_svs, "--out", tmp_path, "--normalize", "macenko", "--reference", glass)
    assert blank.exit_code == 2 and str(glass) in blank.output and "no tissue" in blank.output
    assert len(blank.output.strip().splitlines()) == 1


def test_more_workers_than_cpus_tiles_with_one_per_cpu_and_says_so(synth_slide, tmp_path, caplog):
    from wsi_hcc.utils.pool import usable_cpus

    config = TileConfig(target_mpp=0.5, tile_px=224, min_tissue=0, qc=False)
    with caplog.at_level("WARNING", logger="wsi_hcc"):
        report = run_tile([synth_slide], tmp_path, config, workers=usable_cpus() + 50)
    assert report.count("done") == 1
    assert f"--workers {usable_cpus() + 50} is more than the" in caplog.text
    assert json.loads((tmp_path / "run-manifest.json").read_text())["workers"] == usable_cpus()


def test_workers_and_scheduler_together_is_a_usage_error(synth_slide, tmp_path):
    result = _cli("tile", synth_slide, "--out", tmp_path, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1")
    assert result.exit_code == 2
    assert "give one" in result.output and not (tmp_path / "synthetic.zarr").exists()


def test_state_file_names_the_store_by_its_full_path_when_out_is_relative(synth_slide, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cli("tile", synth_slide, "--out", "rel", "--mpp", "0.5", "--no-qc").exit_code == 0
    store = _state(tmp_path / "rel", "synthetic")["store"]
    assert store == str(tmp_path / "rel" / "synthetic.zarr")  # the viewer and reruns may start elsewhere
