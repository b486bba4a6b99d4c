"""The local worker pool behind ``mmindex embed``: one process per GPU (or N on CPU), whole shards from a queue.

Each worker loads the space's encoders once, and has its own decode processes that prepare the next batches
(decode, resize, resample) while the model encodes the current one. A finished shard is committed at once,
so a run killed at any point resumes with the shards that are not committed yet. Batches are formed per
shard in a fixed order, so the vectors do not depend on the number of workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import tarfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from mmindex.dataset import Dataset, shard_name
from mmindex.embed.shard import Chunk, embed_shard, prepare_chunk
from mmindex.embed.store import EmbeddingStore
from mmindex.encoders.base import Preparer
from mmindex.spaces import Space

log = logging.getLogger("mmindex")
_preparers: dict[str, Preparer] = {}


@dataclass(frozen=True)
class WorkerSettings:
    devices: list[str]          # one worker per entry: "cuda:0", "cuda:1", or "cpu" repeated
    batch_size: int = 64
    decode_workers: int = 1     # decode processes per worker (0: decode in the worker, between batches)
    threads: int | None = None  # torch threads per worker (None: CPU workers share the cores)

    @property
    def threads_per_worker(self) -> int:
        """CPU workers share the cores; a GPU worker's own CPU work needs few threads."""
        if self.threads:
            return self.threads
        cores = os.cpu_count() or 1
        return max(1, cores // len(self.devices)) if self.devices[0] == "cpu" else 2


@dataclass
class RunReport:
    shards: int = 0
    embedded: Counter = field(default_factory=Counter)          # modality -> items
    skipped: Counter = field(default_factory=Counter)           # (modality, reason) -> items
    seconds: Counter = field(default_factory=Counter)           # modality -> worker seconds
    failures: list[str] = field(default_factory=list)
    failed_shards: int = 0

    @property
    def handled(self) -> int:
        return self.shards + self.failed_shards

    def add(self, shard: dict[str, Any]) -> None:
        if "failed" in shard:
            self.failed_shards += 1
            self.failures.append(shard["failed"])
            return
        self.shards += 1
        self.embedded.update(shard["embedded"])
        self.skipped.update({(m, r): n for m, r, n in shard["skipped"]})
        self.seconds.update(shard["seconds"])


def _child_setup() -> None:
    """For worker and decode processes: no library chatter (Beam's import warnings) on the run's stderr, and
    exit as soon as the parent is gone (killed with -9, say), rather than linger or go on writing."""
    if multiprocessing.parent_process() is None:
        return
    logging.getLogger().setLevel(logging.ERROR)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _install_preparers(preparers: dict[str, Preparer]) -> None:
    """Decode process set-up: one thread each (they are many)."""
    _child_setup()
    _preparers.update(preparers)
    torch.set_num_threads(1)


def _prepare(chunk: Chunk) -> list[Any]:
    return prepare_chunk(chunk, _preparers)


def _shard_summary(result, seconds: dict[str, float], device: str) -> dict[str, Any]:
    embedded = Counter(row["modality"] for row in result.rows if row["row"] is not None)
    skipped = Counter((row["modality"], row["skipped"].split(":")[0]) for row in result.rows if row["skipped"])
    return {"number": result.number, "device": device, "embedded": dict(embedded), "seconds": seconds,
            "skipped": [(m, r, n) for (m, r), n in skipped.items()]}


def work(root: str, space: Space, device: str, settings: WorkerSettings, todo, done) -> None:
    """One worker: shard numbers from ``todo`` until a None, a summary per committed shard onto ``done``."""
    _child_setup()
    torch.set_num_threads(settings.threads_per_worker)
    store = EmbeddingStore(Dataset(root), space)
    encoders = space.load(device)
    preparers = {modality: encoder.preparer() for modality, encoder in encoders.items()}
    executor = None
    if settings.decode_workers:
        executor = ProcessPoolExecutor(settings.decode_workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_install_preparers, initargs=(preparers,))
    else:
        _install_preparers(preparers)
    try:
        while (number := todo.get()) is not None:
            try:
                result, seconds = embed_shard(number, store.dataset.shard_path(number), encoders, _prepare,
                                              executor, settings.batch_size, ahead=2 * max(1, settings.decode_workers))
            except (tarfile.TarError, OSError) as err:  # a damaged shard file: the other shards go on
                done.put({"number": number, "failed": f"shard {shard_name(number)} unreadable ({err})"})
                continue
            store.commit(result)
            done.put(_shard_summary(result, seconds, device))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)


def run_workers(store: EmbeddingStore, shards: list[int], settings: WorkerSettings,
                on_shard=lambda summary: None) -> RunReport:
    """Embeds ``shards`` on the pool; returns what was embedded and skipped. A worker that dies is reported,
    the others finish their shards."""
    report = RunReport()
    def finished(summary: dict[str, Any]) -> None:
        report.add(summary)
        on_shard(summary)

    if len(settings.devices) == 1:  # the same loop, in this process
        todo: Any = queue.Queue()
        for number in [*shards, None]:
            todo.put(number)
        work(store.dataset.root, store.space, settings.devices[0], settings, todo, _Callback(finished))
        return report
    context = multiprocessing.get_context("spawn")
    todo, done = context.Queue(), context.Queue()
    for number in [*shards, *[None] * len(settings.devices)]:
        todo.put(number)
    workers = [context.Process(target=work, args=(store.dataset.root, store.space, device, settings, todo, done),
                               name=f"mmindex-embed-{device}-{i}")
               for i, device in enumerate(settings.devices)]
    for process in workers:
        process.start()
    while report.handled < len(shards):
        try:
            summary = done.get(timeout=1.0)
        except queue.Empty:
            dead = [p for p in workers if p.exitcode not in (None, 0)]
            if dead or all(p.exitcode is not None for p in workers):
                report.failures += [f"{p.name} exited with code {p.exitcode}" for p in dead]
                break
            continue
        finished(summary)
    for process in workers:
        process.join(timeout=5 if report.failures else None)
        if process.is_alive():
            process.terminate()
    return report


class _Callback:
    """A queue's ``put`` that calls a function (the pool's result queue, for a worker in this process)."""

    def __init__(self, function):
        self.put = function


def devices(gpus: int | None, device: str, workers: int) -> list[str]:
    """One entry per worker; a clear error when GPUs are asked for and none are usable."""
    if gpus is not None:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < 1:
            raise ValueError("--gpus must be at least 1")
        if available < gpus:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise RuntimeError(f"--gpus {gpus} asked for, but torch ({torch.__version__}, {build}) sees "
                               f"{available} CUDA device(s). Check `nvidia-smi` and install a CUDA build of "
                               f"torch, or run on the CPU with --device cpu --workers N.")
        return [f"cuda:{i}" for i in range(gpus)]
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: torch sees no CUDA device; use --device cpu")
    return [device] * workers
