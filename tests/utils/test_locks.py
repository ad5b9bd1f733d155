"""Two runs into one --out: a lock per output, taken atomically; a dead run's lock is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from wsi_hcc.utils.locks import LockHeld, output_lock


def test_a_live_holder_keeps_the_output_and_a_dead_one_does_not(tmp_path):
    target = tmp_path / "a.zarr"
    with output_lock(target):
        assert (tmp_path / ".a.zarr.lock").is_file()
        with pytest.raises(LockHeld, match=f"a.zarr is being written by another run \\(pid {os.getpid()} on"):
            with output_lock(target):
                pass
    assert not (tmp_path / ".a.zarr.lock").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".a.zarr.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}))
    with output_lock(target):  # the dead run's lock is taken over
        assert json.loads((tmp_path / ".a.zarr.lock").read_text())["pid"] == os.getpid()


@pytest.mark.slow
def test_two_tile_processes_into_one_folder_lose_nothing(tmp_path):
    """Two real processes on the same slides at once once left empty stores and .old folders."""
    from wsi_hcc.store.patch_store import TileReader
    from wsi_hcc.synth import write_synthetic_slide

    for k in range(4):
        write_synthetic_slide(tmp_path / "in" / f"s{k}.svs", size_px=(2048, 1536), mpp=0.25, seed=k)
    command = [sys.executable, "-m", "wsi_hcc", "tile", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
               "--mpp", "0.5", "--tile-px", "128"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert all("Traceback" not in out for out in outputs)
    for run, output in zip(runs, outputs):  # a slide the other run held is a failure that names the holder
        assert run.returncode == 0 or (run.returncode == 1 and "is being written by another run (pid" in output), output
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)  # picks up what was held
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    out = tmp_path / "out"
    assert not [p.name for p in out.iterdir() if p.name.endswith((".old", ".partial", ".lock"))]
    for k in range(4):
        state = json.loads((out / f"s{k}.state.json").read_text())
        reader = TileReader(out / f"s{k}.zarr")
        assert state["status"] == "done" and state["n_tiles"] == len(reader) > 0
        reader[len(reader) - 1]  # every tile is there
