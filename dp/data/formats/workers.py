"""A process pool that returns results in submission order, with bounded work in flight."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # the pool already uses every core


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
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)
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
