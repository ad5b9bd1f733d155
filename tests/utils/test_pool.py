"""The helped pool: --workers N runs jobs in N - 1 children and in this process, from one queue."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from pathlib import Path

import pytest

from wsi_hcc.utils.pool import HelpedPool, run_helped


def _where(index: int, seconds: float) -> tuple[int, int]:
    time.sleep(seconds)
    return index, os.getpid()


def _logged(folder: str, index: int, fail: bool = False) -> int:
    """Leave ``<index>.start`` then, unless it fails, ``<index>.done``, with a pause between."""
    Path(folder, f"{index}.start").touch()
    time.sleep(0.05)
    if fail:
        raise ValueError(f"job {index} failed")
    Path(folder, f"{index}.done").touch()
    return index


def _die() -> None:
    os._exit(3)


@pytest.fixture
def pool():
    signal.alarm(120)  # a hang is a failure, not a stuck test run
    with HelpedPool(2) as helped:
        yield helped
    signal.alarm(0)


def test_every_job_runs_once_here_and_in_the_child(pool):
    results = []
    run_helped([partial(_where, i, 0.02) for i in range(30)], pool, results.append)
    assert sorted(index for index, _ in results) == list(range(30))
    pids = {pid for _, pid in results}
    assert os.getpid() in pids and len(pids) == 2  # this process worked too, beside its one child


@pytest.mark.parametrize("failing", [0, 1], ids=["in the child", "in this process"])
def test_an_error_stops_the_queue_and_is_raised_after_started_jobs_finish(pool, tmp_path, failing):
    # The child takes the first job, this process the second.
    jobs = [partial(_logged, str(tmp_path), i, i == failing) for i in range(40)]
    results = []
    with pytest.raises(ValueError, match=f"job {failing} failed"):
        run_helped(jobs, pool, results.append)
    started = {int(p.stem) for p in tmp_path.glob("*.start")}
    finished = {int(p.stem) for p in tmp_path.glob("*.done")}
    assert started - finished == {failing}  # nothing else is left half done
    assert len(started) < 40  # the queue stopped: the rest never started
    assert set(results) <= finished


def test_a_child_that_dies_is_an_error_not_a_hang(pool):
    with pytest.raises(BrokenProcessPool):
        run_helped([_die] + [partial(_where, i, 0.01) for i in range(10)], pool, lambda result: None)


def test_a_helped_pool_needs_two_workers():
    with pytest.raises(ValueError, match="at least 2 workers"):
        HelpedPool(1)
