"""A local process pool whose caller works too: ``--workers N`` keeps N cores busy with N - 1 child processes.

A plain pool of N children leaves the parent idle while they work, and on a machine of N cores the
children's start-up (a fresh interpreter importing the codecs) competes with the parent's own
serial work: opening the slide, finding tissue, planning the grid. Here the children start while the
parent does that work on its own core, and then the parent takes jobs from the same queue as they do.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from queue import SimpleQueue
from typing import Any

__all__ = ["HelpedPool", "run_helped", "usable_cpus"]


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
        self._pool = ProcessPoolExecutor(self.children, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_child_start, initargs=(initializer,))
        # Start the children now, not at the first job, with Ctrl-C held back: a held signal stays held
        # in a new program, so the children never see it (the interrupt is this process's to handle,
        # and a child caught by it while still importing would print a traceback), while this process
        # gets a Ctrl-C pressed meanwhile as soon as the children are started.
        try:
            with _sigint_held():
                for _ in range(self.children):  # each submit without an idle child starts one
                    self._pool.submit(int)
        except BaseException:
            self._pool.shutdown(cancel_futures=True)
            raise

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


@contextmanager
def _sigint_held():
    """Hold Ctrl-C back for the duration; one pressed meanwhile arrives at the end (not on Windows,
    which has no signal masks)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _child_start(initializer: Callable[[], Any] | None) -> None:
    """In each child as it starts: exit when the parent is gone (killed, say), then the caller's setup."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True, name="exit-with-parent").start()
    if initializer is not None:
        initializer()


def _exit_with(parent_sentinel: int) -> None:
    # Without this a child of a killed parent would wait on its job queue for ever, holding the
    # terminal's output open; nobody is left to take its results.
    multiprocessing.connection.wait([parent_sentinel])
    os._exit(1)
