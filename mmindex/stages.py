"""A stage declared once, as steps, and the protocol of the executors that run any declaration.

A stage is a list of steps over a stream of elements that starts with ``Stage.start``. Each step names the
element types it takes; every other element passes it untouched, so facts that a step emits for the driver
(rejects, counts, committed shards) ride along to the end, where the executor hands them back. Three kinds of
step, one signature each, in the spirit of datatrove's pipeline steps and webdataset's generator stages:

    Each(name, fn, takes)         fn(element) -> elements    one element at a time, in any order, in parallel
    ByKey(name, fn, takes, key=)  fn(key, elements) -> ...   all elements of a key together (a join)
    Whole(name, fn, takes)        fn(elements) -> elements   all the elements it takes at once

The elements of a key, or of a Whole step, come in no particular order (on a cluster they come from many
workers): a step that needs an order sorts them. A step's ``fn`` that needs set-up on the worker that runs it
(a model, a thread pool, a memory budget) is an object with ``setup(worker)`` and, optionally, ``teardown()``,
as Beam's DoFns are; it must pickle, since executors ship it to other processes and machines.

Executors decide only where the steps run: mmindex.executors.local on this machine (threads, processes, one
worker per device), pipelines.executor on any Beam runner. ``runs`` on a step is a hint for the former: what
kind of work it is. This module is the lowest layer of the stages: it imports none of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from mmindex import storage

# What kind of work a step does, which decides where the in-process executor runs it:
#   driver   cheap, or must run in order (a commit): in the driver's thread
#   io       file reads and writes, which release the GIL: on threads
#   cpu      decoding and hashing, which mostly release the GIL: on threads with one worker, else on processes
#   python   mostly Python, which holds the GIL: in the driver's thread with one worker, where more threads would
#            only wait for the GIL, else on processes
#   workers  work behind a heavy set-up (a model): one element at a time per worker; one worker runs in-process
Runs = Literal["driver", "io", "cpu", "python", "workers"]
PARALLEL: tuple[Runs, ...] = ("io", "cpu", "python", "workers")  # Each steps whose elements may run anywhere


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[..., Iterable[Any]]
    takes: type | tuple[type, ...]
    runs: Runs = "driver"

    def wants(self, element: Any) -> bool:
        return isinstance(element, self.takes)


@dataclass(frozen=True)
class Each(Step):
    """``fn(element)`` -> elements."""


@dataclass(frozen=True)
class ByKey(Step):
    """``fn(key, elements)`` -> elements, once per distinct ``key(element)``. Keys must sort: the in-process
    executor runs groups in key order and hands their outputs on in that order."""

    key: Callable[[Any], Hashable] = field(kw_only=True)


@dataclass(frozen=True)
class Whole(Step):
    """``fn(elements)`` -> elements, once, with every element it takes (a plan over all of them)."""


@dataclass(frozen=True)
class Stage:
    """A stage's declaration: its name, the elements it starts from, its steps in order, the types of the facts
    that reach the end, and ``scratch``, a path prefix where an executor may leave a file for the driver (Beam's
    outcome)."""

    name: str
    start: list[Any]
    steps: list[Step]
    facts: tuple[type, ...]
    scratch: str


class Compact:
    """A dataclass element that pickles as its class and field values, in a third of the time the default takes
    (its ``__dict__`` too): runners pickle elements at every shuffle, and worker processes at every hand-over.
    For dataclasses whose fields are all set by ``__init__``, in order."""

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return type(self), tuple(self.__dict__.values())


@dataclass(frozen=True)
class Worker:
    """What a step's ``setup`` learns about the worker that runs it."""

    number: int = 0
    count: int = 1               # workers of the run (on a cluster, unknown: 1)
    device: str | None = None    # the device this worker owns (None: the step's own setting)
    keep_bytes: int = 0          # memory a step may fill with data for later steps (0: elements cross processes)
    local: bool = False          # on this machine, in-process or a child: it may start processes of its own


def set_up(fn: Any, worker: Worker) -> None:
    if hasattr(fn, "setup"):
        fn.setup(worker)


def tear_down(fn: Any) -> None:
    if hasattr(fn, "teardown"):
        fn.teardown()


def chain(steps: list[Step], element: Any) -> Iterator[Any]:
    """``element`` through consecutive Each steps (fused: one worker runs them all), or past those that do not
    take what reaches them."""
    if not steps:
        yield element
        return
    first, rest = steps[0], steps[1:]
    for out in first.fn(element) if first.wants(element) else (element,):
        yield from chain(rest, out)


class WorkerDied(RuntimeError):
    """Worker processes died (killed, out of memory): what they held is lost; the other workers finished."""

    def __init__(self, failures: list[str]):
        super().__init__("; ".join(failures))
        self.failures = failures


class Executor(Protocol):
    local: bool  # whether steps run on this machine, in the driver's folder

    def describe(self) -> dict[str, Any]:
        """How it runs, as a stage's records say."""

    def run(self, stage: Stage) -> Iterator[Any]:
        """Runs the steps; yields every element that reaches the end (as soon as it does, where it can)."""


def portable(path: str) -> str:
    """A local path made absolute, for executors whose workers do not run in the driver's folder; URLs as they
    are."""
    return os.path.abspath(path) if storage.is_local(path) else path
