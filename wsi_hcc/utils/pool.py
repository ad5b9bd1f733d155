"""A local process pool whose caller works too: ``--workers N`` keeps N cores busy with N - 1 child processes.

A plain pool of N children leaves the parent idle while they work, and on a machine of N cores the
children's start-up (a fresh interpreter importing the codecs) competes with the parent's own
serial work: opening the slide, finding tissue, planning the grid. Here the children start while the
parent does that work on its own core, and then the parent takes jobs from the same queue as they do.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from queue import SimpleQueue
from typing import Any

__all__ = ["HelpedPool", "run_helped"]


class HelpedPool(Executor):
    """``workers - 1`` spawned child processes; :func:`run_helped` runs jobs on them and in the caller.

    ``initializer`` runs once in each child as it starts (imports, say), so the children are ready
    by the time the parent has jobs for them.
    """

    def __init__(self, workers: int, initializer: Callable[[], Any] | None = None):
        if workers < 2:
            raise ValueError(f"a helped pool needs at least 2 workers, not {workers}")
        self.children = workers - 1
        # spawn, not fork: open slide handles (openslide, tifffile) must not be shared with children.
        self._pool = ProcessPoolExecutor(self.children, mp_context=multiprocessing.get_context("spawn"))
        if initializer is not None:
            for _ in range(self.children):  # start every child now, not at the first job
                self._pool.submit(initializer)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def run_helped(jobs: Iterable[Callable[[], Any]], pool: HelpedPool, on_result: Callable[[Any], None]) -> None:
    """Run every job (a picklable call without arguments) in the pool's children and in this process,
    from one shared queue, first come first served.

    Each child holds one job at a time and takes the next as it finishes, as this process does, so
    all run out of work together. ``on_result`` gets each job's result in this thread, in the order
    they finish. The first error stops the handing out of jobs and is raised once the jobs already
    started have finished.
    """
    todo = deque(jobs)
    lock = threading.Lock()
    finished: SimpleQueue[Future] = SimpleQueue()
    count = {"handed": 0, "received": 0}  # jobs handed to children; their results taken from ``finished``

    def take(for_child: bool):
        with lock:
            if not todo:
                return False, None
            count["handed"] += for_child  # with the take, so the final wait never misses a job
            return True, todo.popleft()

    def stop() -> None:
        with lock:
            todo.clear()

    def feed(done: Future | None = None) -> None:
        if done is not None:
            finished.put(done)
            if done.cancelled() or done.exception() is not None:
                stop()  # hand out nothing more: the error is raised once the rest are in
                return
        found, job = take(for_child=True)
        if not found:
            return
        try:
            future = pool.submit(job)
        except BaseException as error:  # a broken pool: stop handing out jobs and report it in turn
            stop()
            future = Future()
            future.set_exception(error)
            finished.put(future)
            return
        future.add_done_callback(feed)

    def drain() -> None:
        """Wait for the jobs already handed out, so that none is still writing when an error is raised."""
        while count["received"] < count["handed"]:
            finished.get()
            count["received"] += 1

    def collect(block: bool) -> None:
        while count["received"] < count["handed"] and (block or not finished.empty()):
            future = finished.get()
            count["received"] += 1
            if future.exception() is not None:
                stop()
                drain()
            on_result(future.result())

    for _ in range(pool.children):
        feed()
    try:
        while True:
            collect(block=False)
            found, job = take(for_child=False)
            if not found:
                break
            on_result(job())
    except BaseException:
        stop()
        drain()
        raise
    collect(block=True)
