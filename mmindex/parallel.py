"""Running a function over many jobs on a pool while keeping their order and bounding the work in flight."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import Any


def ordered_map(executor: Executor | None, fn: Callable, jobs: Iterable, ahead: int,
                discard: Callable[[Any], None] | None = None) -> Iterator:
    """fn over jobs in order; with an executor, up to ``ahead`` jobs run ahead of the consumer.

    ``jobs`` may be a generator: it is drawn only as far as the pool has room, so memory stays bounded. If the
    consumer stops early (an error), jobs not started are cancelled and ``discard`` gets the results of those
    that ran, so that what they hold (a shared-memory block) is released.
    """
    if executor is None:
        yield from map(fn, jobs)
        return
    pending: deque = deque()
    try:
        for job in jobs:
            pending.append(executor.submit(fn, job))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            if not future.cancel() and discard is not None:
                with contextlib.suppress(Exception):  # a job that failed holds nothing
                    discard(future.result())
