"""Running a function over many jobs on a pool while keeping their order and bounding the work in flight."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor


def ordered_map(executor: Executor | None, fn: Callable, jobs: Iterable, ahead: int) -> Iterator:
    """fn over jobs in order; with an executor, up to ``ahead`` jobs run ahead of the consumer.

    ``jobs`` may be a generator: it is drawn only as far as the pool has room, so memory stays bounded.
    """
    if executor is None:
        yield from map(fn, jobs)
        return
    pending: deque = deque()
    for job in jobs:
        pending.append(executor.submit(fn, job))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
