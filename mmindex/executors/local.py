"""The in-process executor: any declared stage on this machine, without a pipeline runner's per-element costs.

Elements stream from step to step as generators of batches, so a stage's first steps overlap (candidates are
checked while they are discovered) and memory holds only what a ByKey or Whole step must gather. A batch is
what one step's call made (or what a step let pass): elements cross a step's generator a batch at a time, not
one by one, which keeps the driver's thread out of the way of the threads that do the work. Where a step runs follows
its ``runs`` hint (see mmindex.stages):

    driver   in the driver's thread, in order: cheap steps, and commits, which then follow the key order
    io       on a thread pool, ahead of the next step
    cpu      on the executor's threads with one worker; with more, consecutive Each steps run fused on worker
             processes (an element crosses to a process once, and the process reads for itself)
    python   in the driver's thread with one worker; with more, on worker processes as cpu
    workers  one element at a time per worker, on one process per worker (one per device), each set up once;
             a single worker runs in this process

ByKey steps run their groups in key order and hand their outputs on in that order (on threads for ``io`` and
``cpu``): groups already sit in this process. A step's set-up learns its memory budget (``keep_bytes``, shared by
the threads of this process; none on worker processes, whose outputs a pipe copies twice and the driver unpickles
holding the GIL: with two workers, ingest was 6% faster reading files again to write them) and its worker's device.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mmindex.executors.processes import on_processes
from mmindex.parallel import ordered_map
from mmindex.stages import PARALLEL, ByKey, Each, Stage, Step, Worker, set_up, tear_down

KEPT_BYTES = 2**30   # data steps may hold in memory for later ones (past it, they read files again)
BATCH = 1024         # outputs of a ByKey step's groups handed on together (many groups make one output each)


class LocalExecutor:
    """Runs stages with ``workers`` processes where steps run on processes (or one per entry of ``devices``),
    ``threads`` threads where they run on threads (None: up to 4, as the cores allow)."""

    local = True

    def __init__(self, workers: int = 1, threads: int | None = None, devices: list[str] | None = None,
                 keep_bytes: int = KEPT_BYTES):
        self.devices = devices
        self.workers = len(devices) if devices else workers
        self.threads = threads or min(4, os.cpu_count() or 1)
        self.keep_bytes = keep_bytes

    def describe(self) -> dict[str, Any]:
        return {"devices": self.devices} if self.devices else {"workers": self.workers, "threads": self.threads}

    def run(self, stage: Stage) -> Iterator[Any]:
        with contextlib.ExitStack() as resources:
            resources.enter_context(young_collections_only())
            stream: Iterator[list[Any]] = iter([stage.start])
            for steps in self._units(stage.steps):
                if self._needs_processes(steps):
                    stream = self._on_processes(steps, stream, stage.name)
                else:
                    stream = self._in_process(steps[0], stream, resources)
            for batch in stream:
                yield from batch

    def _needs_processes(self, steps: list[Step]) -> bool:
        return self.workers > 1 and isinstance(steps[0], Each) and any(
            s.runs in ("cpu", "python", "workers") for s in steps)

    def _units(self, steps: list[Step]) -> list[list[Step]]:
        """The steps one by one, but runs of consecutive parallel Each steps fused where they go to processes."""
        units: list[list[Step]] = []
        for step in steps:
            if units and all(_fusable(s) for s in (*units[-1], step)) and self._needs_processes([*units[-1], step]):
                units[-1].append(step)
            else:
                units.append([step])
        return units

    def _worker(self, number: int = 0, count: int = 1, on_a_process: bool = False) -> Worker:
        device = self.devices[number] if self.devices else None
        return Worker(number, count, device, 0 if on_a_process else self.keep_bytes, local=True)

    def _on_processes(self, steps: list[Step], stream: Iterator[list[Any]], name: str) -> Iterator[list[Any]]:
        workers = [self._worker(n, self.workers, on_a_process=True) for n in range(self.workers)]
        passed: deque[list[Any]] = deque()
        wanted = tuple(t for step in steps for t in (step.takes if isinstance(step.takes, tuple) else (step.takes,)))
        for output in on_processes(steps, workers, _taking(wanted, stream, passed), 4 * self.workers, name):
            yield from _drain(passed)
            yield [output]
        yield from _drain(passed)

    def _in_process(self, step: Step, stream: Iterator[list[Any]],
                    resources: contextlib.ExitStack) -> Iterator[list[Any]]:
        set_up(step.fn, self._worker())
        resources.callback(tear_down, step.fn)
        pool, size = None, 1
        if step.runs in ("io", "cpu"):
            size = self.threads if step.runs == "cpu" else max(self.workers, self.threads)
            pool = resources.enter_context(ThreadPoolExecutor(size, thread_name_prefix=step.name))
        if isinstance(step, Each):
            return _each(step, stream, pool, 4 * size)
        return _gathered(step, stream, pool, 4 * size)


@contextlib.contextmanager
def young_collections_only() -> Iterator[None]:
    """Python's full garbage collections walk every live object, and a run holds many (each sample's record, until
    its shard is written): they took 13% of an ingest's time. Young collections still free short-lived cycles; what
    outlives them is collected after the run."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, 2**31 - 1)
    try:
        yield
    finally:
        gc.set_threshold(young, middle, old)


def _fusable(step: Step) -> bool:
    return isinstance(step, Each) and step.runs in PARALLEL


def _each(step: Each, stream: Iterator[list[Any]], pool: ThreadPoolExecutor | None,
          ahead: int) -> Iterator[list[Any]]:
    if pool is None:
        fn, takes = step.fn, step.takes
        for batch in stream:
            out: list[Any] = []
            for element in batch:
                if isinstance(element, takes):
                    out.extend(fn(element))
                else:
                    out.append(element)
            yield out
        return
    passed: deque[list[Any]] = deque()
    for outputs in ordered_map(pool, _listed(step.fn), _taking(step.takes, stream, passed), ahead):
        yield from _drain(passed)
        yield outputs
    yield from _drain(passed)


def _gathered(step: Step, stream: Iterator[list[Any]], pool: ThreadPoolExecutor | None,
              ahead: int) -> Iterator[list[Any]]:
    """A ByKey or Whole step: the elements it takes, gathered; the others handed on as they come."""
    takes, key = step.takes, step.key if isinstance(step, ByKey) else None
    groups: dict[Any, list[Any]] = defaultdict(list)
    for batch in stream:
        passed = []
        for element in batch:
            if isinstance(element, takes):
                groups[key(element) if key else None].append(element)
            else:
                passed.append(element)
        if passed:
            yield passed
    if key is None:
        yield list(step.fn(groups.pop(None, [])))
    elif pool is None:
        outputs: list[Any] = []
        for group in sorted(groups):
            outputs.extend(step.fn(group, groups.pop(group)))
            if len(outputs) >= BATCH:
                yield outputs
                outputs = []
        yield outputs
    else:
        yield from ordered_map(pool, _listed(lambda group: step.fn(*group)), sorted(groups.items()), ahead)


def _taking(takes: type | tuple[type, ...], stream: Iterable[list[Any]], passed: deque[list[Any]]) -> Iterator[Any]:
    """The elements of the types a step (or fused steps) takes, one by one; the others are put aside in
    ``passed``, a batch for each batch they came in, to be handed on as they come."""
    for batch in stream:
        others = []
        for element in batch:
            if isinstance(element, takes):
                yield element
            else:
                others.append(element)
        if others:
            passed.append(others)


def _drain(passed: deque[list[Any]]) -> Iterator[list[Any]]:
    while passed:
        yield passed.popleft()


def _listed(fn: Callable[..., Iterable[Any]]) -> Callable[..., list[Any]]:
    """``fn`` whose outputs are made where it runs (on a pool's thread), not where they are read."""
    return lambda element: list(fn(element))
