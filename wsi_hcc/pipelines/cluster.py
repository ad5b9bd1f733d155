"""Whole slides as dask.distributed work: ``wsi-hcc classify --scheduler ADDRESS`` or ``--workers N``.

Each slide's chain runs on the workers as a few tasks, one per stage, each submitted when the one
before it ends (:func:`run_chains`), keyed
``wsi-hcc-<stage>-<position>-<stem>-<run>`` so that a dashboard groups them by stage. The stage that
runs the network is tagged with the resource ``GPU=1`` when a worker declares that resource (a
worker with one GPU then runs one slide's model work at a time). The client plans, submits, gathers
the rows and writes the run's own outputs; the workers write each slide's outputs, atomically, as a
local run does. Models are loaded once per worker process (:func:`worker_cached`).

Workers must see the slides, the model and the output folder at the same paths as the client (a
shared file system): :func:`check_workers_see` asks every worker before a slide is submitted.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from wsi_hcc.errors import WsiHccError
from wsi_hcc.tiling.inputs import SlideTask
from wsi_hcc.utils.progress import Progress
from wsi_hcc.utils.runs import one_line_reason, write_problem

__all__ = ["SlideChain", "Cluster", "run_on_cluster", "connect", "open_cluster", "check_workers_see", "worker_cached",
           "run_chains", "LOCAL_WORKER", "SAME_PATHS_HELP"]

log = logging.getLogger(__name__)
T = TypeVar("T")
LOCAL_WORKER = "local"  # the worker column of a run without a cluster
SAME_PATHS_HELP = ("workers must see the slides, the model and OUT (and --stores) at the same paths as this command "
                   "(a shared file system)")
_WAIT_FOR_WORKERS_S = 60


class SlideChain(Protocol):
    """One slide's work as stages. It is pickled to the workers, so it holds paths and settings,
    never a loaded model. ``run(stage, task, *earlier)`` gets the results of the earlier stages; the
    last stage returns ``(row, warnings)``."""

    stages: tuple[str, ...]
    gpu_stage: str

    def run(self, stage: str, task: SlideTask, *earlier: Any) -> Any: ...


@dataclass
class Cluster:
    """A client and what the run manifest records of its cluster."""

    client: Any
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def has_gpu_resource(self) -> bool:
        return any("GPU" in w["resources"] for w in self.description.get("workers", []))


def run_on_cluster(chain: SlideChain, tasks: list[SlideTask], readable: list[Path], writable: list[Path],
                   failed_row: Callable[[SlideTask, str], dict[str, Any]],
                   write_rows: Callable[[list[dict[str, Any]]], None], workers: int, scheduler: str | None,
                   progress: Progress) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``chain`` over ``tasks`` on a dask cluster (``scheduler``, or a local one of ``workers``
    processes) once every worker has shown that it reads ``readable`` and the slides and writes
    into ``writable``; the rows (:func:`run_chains`), and the cluster as the manifest records it."""
    with open_cluster(workers, scheduler) as cluster:
        check_workers_see(cluster.client, readable + [t.path for t in tasks if t.path.exists()], writable)
        rows = run_chains(cluster, chain, tasks, failed_row, write_rows, progress)
    return rows, cluster.description


def connect(scheduler: str):
    """A dask.distributed client of the scheduler at ``scheduler``, or one line saying it is unreachable."""
    from distributed import Client

    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise WsiHccError(f"cannot reach the dask scheduler at {scheduler} ({exc}); check the address") from None


@contextmanager
def open_cluster(workers: int = 1, scheduler: str | None = None) -> Iterator[Cluster]:
    """A client of the scheduler at ``scheduler``, or of a local cluster of ``workers`` processes
    (one worker per GPU with dask-cuda's ``LocalCUDACluster`` where it is installed and GPUs are
    visible); both closed on exit."""
    from distributed import Client

    local, kind = None, "scheduler"
    if scheduler:
        client = connect(scheduler)
    else:
        local, kind = _local_cluster(workers)
        client = Client(local)
    try:
        try:
            client.wait_for_workers(1, timeout=_WAIT_FOR_WORKERS_S)
        except TimeoutError:
            raise WsiHccError(f"the dask scheduler at {client.scheduler.address} has no workers after "
                              f"{_WAIT_FOR_WORKERS_S} s; start some (dask worker {client.scheduler.address})") from None
        yield Cluster(client, _describe(client, kind))
    finally:
        client.close()
        if local is not None:
            local.close()


def _local_cluster(workers: int):
    """A LocalCluster, or a LocalCUDACluster; its dashboard on a free port (":0"), never a clash with
    another cluster on this machine."""
    from distributed import LocalCluster

    gpus = _visible_gpus()
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            log.info("%d GPUs visible but dask-cuda is not installed: a plain local cluster shares them", gpus)
        else:
            return LocalCUDACluster(n_workers=min(workers, gpus), threads_per_worker=1, resources={"GPU": 1},
                                    dashboard_address=":0", silence_logs=logging.ERROR), "LocalCUDACluster"
    return LocalCluster(n_workers=workers, processes=True, threads_per_worker=1, dashboard_address=":0",
                        silence_logs=logging.ERROR), "LocalCluster"


def _visible_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _describe(client, kind: str) -> dict[str, Any]:
    info = client.scheduler_info()
    workers = [{"address": address, "nthreads": w.get("nthreads"), "resources": dict(w.get("resources") or {}),
                "host": w.get("host")} for address, w in sorted(info.get("workers", {}).items())]
    return {"kind": kind, "scheduler": info.get("address"), "workers": workers,
            "resources": dict(sum((Counter(w["resources"]) for w in workers), Counter()))}


def check_workers_see(client, readable: Sequence[Path], writable: Sequence[Path]) -> None:
    """Fail in one line, before any slide is submitted, if a worker cannot read a path of
    ``readable`` or write into a folder of ``writable``."""
    problems = client.run(_what_this_worker_misses, [str(p) for p in readable], [str(p) for p in writable])
    for address, problem in sorted(problems.items()):
        if problem:
            raise WsiHccError(f"dask worker {address}: {problem}; {SAME_PATHS_HELP}")


def _what_this_worker_misses(readable: list[str], writable: list[str]) -> str | None:
    for path in readable:
        if not os.path.exists(path):
            return f"cannot see {path}"
    for folder in writable:
        if problem := write_problem(Path(folder)):
            return f"cannot write into {folder} ({problem})"
    return None


_CACHE: OrderedDict[str, Any] = OrderedDict()
_CACHE_LOCK = threading.Lock()
LOADS: Counter = Counter()  # how often this process loaded each key (what the tests count)


def worker_cached(key: str, load: Callable[[], T], keep: int = 2) -> T:
    """``load()`` once per process for ``key`` (a model's digest), the ``keep`` latest kept: a
    worker loads a model for its first slide and reuses it for the next ones."""
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        value = _CACHE[key] = load()
        LOADS[key] += 1
        while len(_CACHE) > keep:
            _CACHE.popitem(last=False)
        return value


def _run_stage(chain: SlideChain, stage: str, task: SlideTask, *earlier: Any) -> Any:
    tifffile_log = logging.getLogger("tifffile")
    if tifffile_log.level == logging.NOTSET:  # as the CLI does: a damaged file is our one-line row, not a log
        tifffile_log.setLevel(logging.CRITICAL)
    result = chain.run(stage, task, *earlier)
    if stage != chain.stages[-1]:
        return result
    from distributed import get_worker

    row, warnings = result
    return {**row, "worker": get_worker().address}, tuple(warnings)


def run_chains(cluster: Cluster, chain: SlideChain, tasks: Sequence[SlideTask],
               failed_row: Callable[[SlideTask, str], dict[str, Any]],
               write_rows: Callable[[list[dict[str, Any]]], None], progress: Progress) -> list[dict[str, Any]]:
    """Every task's chain on the cluster; one row per task, in the tasks' order.

    A slide's next stage is submitted when its stage before ends, with that stage's (small) result
    as an argument rather than a dependency: the scheduler then gives it to the first free worker,
    not to the one that holds the result and may be busy with another slide (everything a stage
    reads is on the shared file system). Later stages go first, so slides finish in order.
    ``write_rows`` gets the rows finished so far after every slide (and once for an empty run). A
    slide whose task raised, or whose worker died more often than the scheduler retries, is
    ``failed_row(task, reason)``. ``progress`` hears one stage, ``"cluster"``: items are slides (in
    the order they finish), steps the stage tasks, with a count per stage as the status.
    """
    from distributed import as_completed

    client, run = cluster.client, uuid.uuid4().hex[:8]
    stage_of: dict[Any, tuple[int, int]] = {}
    earlier: list[list[Any]] = [[] for _ in tasks]

    def submit(position: int, k: int):
        stage = chain.stages[k]
        resources = {"GPU": 1} if stage == chain.gpu_stage and cluster.has_gpu_resource else None
        key = f"wsi-hcc-{stage}-{position}-{tasks[position].stem}-{run}"
        future = client.submit(_run_stage, chain, stage, tasks[position], *earlier[position], pure=False,
                               resources=resources, priority=k, key=key)
        stage_of[future.key] = (position, k)
        return future

    rows: list[dict[str, Any] | None] = [None] * len(tasks)
    counts: Counter = Counter()
    n_workers, finished = len(cluster.description.get("workers", [])), 0
    progress.stage("cluster")
    if tasks:
        progress.item_started(f"on {n_workers} workers", 0, len(tasks))
        progress.steps_planned(len(tasks) * len(chain.stages))
    running = as_completed([submit(position, 0) for position in range(len(tasks))])
    for future in running:
        position, k = stage_of.pop(future.key)
        if future.status == "finished" and k + 1 < len(chain.stages):
            earlier[position].append(future.result())
            running.add(submit(position, k + 1))
        counts[chain.stages[k]] += 1
        progress.steps_done(1, " · ".join(f"{s} {counts[s]}/{len(tasks)}" for s in chain.stages))
        if future.status == "finished" and k + 1 < len(chain.stages):
            continue
        warnings: tuple[str, ...] = ()
        if future.status == "finished":
            rows[position], warnings = future.result()
        else:
            rows[position] = failed_row(tasks[position], _failure_reason(tasks[position], future))
        earlier[position] = []
        write_rows([r for r in rows if r is not None])
        finished += 1
        progress.item_finished(warnings)
        if finished < len(tasks):
            progress.item_started(f"on {n_workers} workers", finished, len(tasks))
            progress.steps_planned(len(tasks) * len(chain.stages), sum(counts.values()))
    if not tasks:
        write_rows([])
    return [r for r in rows if r is not None]


def _failure_reason(task: SlideTask, future) -> str:
    from distributed import KilledWorker

    exc = future.exception()
    if isinstance(exc, KilledWorker):
        last = getattr(getattr(exc, "last_worker", None), "address", None) or "unknown"
        return (f"{task.path}: the dask workers that ran it died {getattr(exc, 'allowed_failures', 0) + 1} times "
                f"(the last, {last}); see the worker logs (out of memory?), then rerun: finished slides are skipped")
    return one_line_reason(task.path, exc)
