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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from mmindex.dataset import Dataset, shard_name
from mmindex.dataset.embeddings import EmbeddingStore, ShardSummary
from mmindex.embed.shard import Chunk, embed_shard, prepare_chunk
from mmindex.embed.transfer import SharedBatch, pack
from mmindex.encoders.base import Preparer
from mmindex.spaces import Space

if TYPE_CHECKING:
    from mmindex.embed.run import EmbedSettings, OnShard

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


def _prepare_and_share(chunk: Chunk) -> list[Any] | SharedBatch:
    """In a decode process: the batch goes back through shared memory (see transfer.py)."""
    return pack(prepare_chunk(chunk, _preparers))


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
                prepare = _prepare_and_share if executor else _prepare
                result, seconds = embed_shard(number, store.dataset.shard_path(number), encoders, prepare,
                                              executor, settings.batch_size, ahead=2 * max(1, settings.decode_workers))
            except (tarfile.TarError, OSError) as err:  # a damaged shard file: the other shards go on
                path = store.dataset.shard_path(number)
                done.put(ShardSummary(number, failed=f"shard {shard_name(number)} is damaged ({err}): run `mmindex "
                                                     f"check {store.dataset.root} --repair`, which rebuilds {path} "
                                                     f"from its sources"))
                continue
            store.commit(result)
            done.put(ShardSummary.of(number, result.rows, seconds=seconds, device=device))
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)


class WorkerPool:
    """The local executor of an embed run: ``settings.devices`` worker processes (one: this process)."""

    def __init__(self, settings: WorkerSettings):
        self.settings = settings

    @classmethod
    def for_settings(cls, settings: EmbedSettings) -> WorkerPool:
        chosen = devices(settings.gpus, settings.device, settings.workers)
        decode_workers = settings.decode_workers
        if decode_workers is None:  # on CPU the model needs the cores; a GPU worker gets its share of them
            decode_workers = 1 if chosen[0] == "cpu" else max(1, min(8, (os.cpu_count() or 2) // len(chosen) - 1))
        return cls(WorkerSettings(chosen, settings.batch_size, decode_workers, settings.threads))

    def describe(self) -> dict[str, Any]:
        return asdict(self.settings)

    def __call__(self, store: EmbeddingStore, pending: list[int], on_shard: OnShard) -> list[str]:
        """Embeds ``pending`` on the pool. A worker that dies is reported; the others finish their shards."""
        settings = self.settings
        if len(settings.devices) == 1:  # the same loop, in this process
            todo: Any = queue.Queue()
            for number in [*pending, None]:
                todo.put(number)
            work(store.dataset.root, store.space, settings.devices[0], settings, todo, _Callback(on_shard))
            return []
        context = multiprocessing.get_context("spawn")
        todo, done = context.Queue(), context.Queue()
        for number in [*pending, *[None] * len(settings.devices)]:
            todo.put(number)
        workers = [context.Process(target=work, args=(store.dataset.root, store.space, device, settings, todo, done),
                                   name=f"mmindex-embed-{device}-{i}")
                   for i, device in enumerate(settings.devices)]
        for process in workers:
            process.start()
        failures: list[str] = []
        handled = 0
        while handled < len(pending):
            try:
                summary = done.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in workers if p.exitcode not in (None, 0)]
                if dead or all(p.exitcode is not None for p in workers):
                    failures += [f"{p.name} exited with code {p.exitcode}" for p in dead]
                    break
                continue
            handled += 1
            on_shard(summary)
        for process in workers:
            process.join(timeout=5 if failures else None)
            if process.is_alive():
                process.terminate()
        return failures


class _Callback:
    """A queue's ``put`` that calls a function (the pool's result queue, for a worker in this process)."""

    def __init__(self, function):
        self.put = function


def devices(gpus: int | None, device: str, workers: int) -> list[str]:
    """One entry per worker; a clear error when GPUs are asked for and none are usable."""
    if gpus is not None:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available < gpus:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise RuntimeError(f"--gpus {gpus} asked for, but torch ({torch.__version__}, {build}) sees "
                               f"{available} CUDA device(s). Check `nvidia-smi` and install a CUDA build of "
                               f"torch, or run on the CPU with --device cpu --workers N.")
        return [f"cuda:{i}" for i in range(gpus)]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: torch sees no CUDA device; use --device cpu")
    return [device] * workers
