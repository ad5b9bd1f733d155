"""--workers N under signals: Ctrl-C, SIGTERM (kill, a batch system's time limit), a killed parent.

Each stops in one line, leaves no worker process behind, and a rerun resumes to the store an
uninterrupted run writes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsi_hcc.cli.errors import RESUME_HINT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")]

_ARGS = ["--mpp", "0.25", "--tile-px", "256", "--min-tissue", "0", "--no-pass-through", "--no-qc"]


@pytest.fixture(scope="module")
def big_slide(tmp_path_factory) -> Path:
    """Large enough (3,072 tiles decoded and encoded) that a signal lands while tiles are written."""
    from wsi_hcc.synth import write_synthetic_slide

    path = tmp_path_factory.mktemp("big") / "big.svs"
    write_synthetic_slide(path, size_px=(16384, 12288), mpp=0.25, seed=3)
    return path


@pytest.fixture(scope="module")
def clean_store(big_slide, tmp_path_factory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("clean")
    subprocess.run([sys.executable, "-m", "wsi_hcc", "tile", str(big_slide), "--out", str(out), *_ARGS], check=True,
                   capture_output=True)
    return _files(out / "big.zarr")


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*")) if p.is_file()}


def _start(slide: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "wsi_hcc", "tile", str(slide), "--out", str(out), "--workers", "2",
                             *_ARGS], start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _wait_for(condition, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError("timed out")


def _finish(proc: subprocess.Popen, children: set[int]) -> tuple[int, str]:
    _, stderr = proc.communicate(timeout=60)
    _wait_for(lambda: not _alive(children), timeout=15)  # no worker outlives the run
    return proc.returncode, stderr


def test_ctrl_c_while_the_children_start_is_one_line(big_slide, tmp_path):
    proc = _start(big_slide, tmp_path / "out")
    children = _wait_for(lambda: _children(proc.pid))
    os.killpg(proc.pid, signal.SIGINT)  # as the terminal does: the whole group, children still importing
    code, stderr = _finish(proc, children)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == RESUME_HINT


@pytest.mark.parametrize("whole_group", [False, True], ids=["kill PID", "the whole group (scancel)"])
def test_sigterm_mid_run_stops_cleanly_and_a_rerun_resumes(big_slide, clean_store, tmp_path, whole_group):
    out = tmp_path / "out"
    proc = _start(big_slide, out)
    progress = out / ".big.zarr.partial" / "_progress"
    _wait_for(lambda: list(progress.glob("job-*.done")) if progress.is_dir() else [])
    children = _children(proc.pid)
    (os.killpg if whole_group else os.kill)(proc.pid, signal.SIGTERM)
    code, stderr = _finish(proc, children)
    assert code == 143, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == RESUME_HINT.replace("interrupted", "terminated")
    assert not (out / "big.zarr").exists() and progress.is_dir()  # nothing that looks finished
    rerun = subprocess.run([sys.executable, "-m", "wsi_hcc", "tile", str(big_slide), "--out", str(out),
                            "--workers", "2", *_ARGS], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert _files(out / "big.zarr") == clean_store


def test_a_killed_parent_takes_its_children_along(big_slide, tmp_path):
    proc = _start(big_slide, tmp_path / "out")
    children = _wait_for(lambda: _children(proc.pid))
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)  # the OOM killer, or kill -9: no chance to clean up
    proc.communicate(timeout=60)  # returns only once no child holds the output pipes open
    _wait_for(lambda: not _alive(children), timeout=15)
