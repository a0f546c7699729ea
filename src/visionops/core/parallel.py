"""Mapping a function over chunks of work in worker processes, in order, with bounded memory."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], chunks: Sequence[T], workers: int) -> Iterator[R]:
    """``fn`` of each chunk, in the chunks' order, in ``workers`` processes (in this one when
    ``workers`` <= 1 or there is one chunk). At most two chunks per worker are in flight, so the
    results waiting to be consumed never grow with the number of chunks (``Executor.map`` submits
    them all at once)."""
    if workers <= 1 or len(chunks) < 2:
        yield from map(fn, chunks)
        return
    # fork: workers start in milliseconds and inherit the imported modules; nothing here holds locks.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        pending: deque[Future[R]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(fn, chunk))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
