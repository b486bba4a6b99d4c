"""Worker processes on this machine: each sets up a chain of steps once (a model, a memory budget), then takes
elements from one queue until there are none left, so a slow element never holds up the others.

A worker that dies (killed, out of memory) is reported as WorkerDied once the others have stopped; what it held
is lost, and whatever the steps commit as they go stays committed for the next run. A step's exception is
raised in the driver as it was.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from mmindex.stages import Step, Worker, WorkerDied, chain, set_up, tear_down


def child_setup() -> None:
    """For worker processes and their own children: no library chatter (Beam's import warnings) on the run's
    stderr, and exit as soon as the parent is gone (killed with -9, say), rather than linger or go on writing."""
    if multiprocessing.parent_process() is None:
        return
    logging.getLogger().setLevel(logging.ERROR)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


_END = object()


def _sendable(err: Exception) -> Exception:
    """The exception itself when it pickles whole; else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:
        return RuntimeError(f"{type(err).__name__}: {err}")


def _work(steps: list[Step], worker: Worker, todo: Any, done: Any) -> None:
    child_setup()
    for step in steps:
        set_up(step.fn, worker)
    try:
        while (element := todo.get()) is not None:
            try:
                done.put((list(chain(steps, element)), None))
            except Exception as err:
                done.put((None, _sendable(err)))
    finally:
        for step in steps:
            tear_down(step.fn)


def on_processes(steps: list[Step], workers: list[Worker], elements: Iterable[Any], ahead: int,
                 name: str) -> Iterator[Any]:
    """What ``steps`` (fused) make of ``elements``, in the order they finish, on one process per worker; at most
    ``ahead`` elements are handed out and not yet finished."""
    context = multiprocessing.get_context("spawn")
    todo, done = context.Queue(), context.Queue()
    processes = [context.Process(target=_work, args=(steps, worker, todo, done),
                                 name=f"mmindex-{name}-{worker.device or 'cpu'}-{worker.number}")
                 for worker in workers]
    for process in processes:
        process.start()
    source, in_flight, finished, lost = iter(elements), 0, False, False
    try:
        while True:
            while not finished and in_flight < ahead:
                element = next(source, _END)
                if element is _END:
                    finished = True
                    for _ in processes:
                        todo.put(None)
                else:
                    todo.put(element)
                    in_flight += 1
            if not in_flight:
                return
            try:
                outputs, err = done.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in processes if p.exitcode not in (None, 0)]
                if dead or all(p.exitcode is not None for p in processes):
                    lost = True
                    raise WorkerDied([f"{p.name} exited with code {p.exitcode}" for p in dead]
                                     or ["worker processes exited before their work was done"]) from None
                continue
            in_flight -= 1
            if err is not None:
                raise err
            yield from outputs
    finally:
        orderly = finished and not in_flight  # every worker was told to stop, and has nothing left to do
        for process in processes:
            process.join(timeout=None if orderly else 5 if lost else 0)
            if process.is_alive():
                process.terminate()
