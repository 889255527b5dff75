"""A process pool that returns results in submission order, with bounded work in flight."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


_IN_POOL = False


def _worker_init(parent_pid: int) -> None:
    global _IN_POOL
    die_with_parent(parent_pid)
    _IN_POOL = True  # opencv, when a job needs it, runs single-threaded: the pool already uses every core
    keep_freed_memory()


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent dies, however the parent dies (SIGKILL
    included): Linux's ``prctl(PR_SET_PDEATHSIG)``, through ctypes as no library offers it.

    Without it a pool worker blocks forever on its task queue after a ``kill -9`` of ``dp import``
    (it holds the queue's write end itself, so it never sees EOF), and keeps the resource tracker
    alive too. Exits at once if ``parent_pid`` is already gone. False where prctl is missing (not Linux).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        ok = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
    return ok


def keep_freed_memory(mmap_threshold: int = 64 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc's malloc reuse freed blocks of up to ``mmap_threshold`` bytes instead of mapping
    fresh pages for each (and keep up to ``trim_threshold`` of freed memory instead of returning it).

    Import moves episode-sized buffers around (decoded frames, pickled results, compressed shards);
    by default every one above ~128 KB is a new mmap whose page faults cost a third of a CALVIN
    frame's decoding on a busy VM. For processes that only import (pool workers, ``dp import``).
    Returns False where it does not apply (not glibc).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold))
    except (OSError, AttributeError):
        return False


def cv2_module() -> Any:
    """opencv, imported on first use: a worker whose jobs never resize does not pay its start-up."""
    import cv2

    if _IN_POOL:
        cv2.setNumThreads(1)
    return cv2


def ordered_map(fn: Callable[..., Any], arg_tuples: Iterable[tuple], workers: int) -> Iterator[Future]:
    """Run ``fn(*args)`` for each tuple in ``workers`` processes (0: inline); yield futures in order.

    At most ``2 * workers + 1`` jobs are in flight, so memory stays bounded however many there are.
    """
    if workers <= 0:
        for args in arg_tuples:
            fut: Future = Future()
            try:
                fut.set_result(fn(*args))
            except Exception as exc:  # delivered through the future, as from a worker
                fut.set_exception(exc)
            yield fut
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init, initargs=(os.getpid(),))
    try:
        pending: deque[Future] = deque()
        for args in arg_tuples:
            pending.append(pool.submit(fn, *args))
            if len(pending) > 2 * workers:
                yield pending.popleft()
        while pending:
            yield pending.popleft()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def call(job: Callable[..., Any], args: tuple) -> Any:
    """``job(*args)``: lets one pool run jobs of any function."""
    return job(*args)
