"""The embed stage, declared once as steps (see mmindex.stages): whole shards, each embedded and committed by a
worker that loaded the space's encoders once.

    shard number -> EmbedShards -> ShardSummary

A worker forms a shard's batches in a fixed order (shard.py), so the vectors do not depend on the number of
workers or on the executor. A finished shard is committed at once, so a run killed at any point resumes with the
shards that are not committed yet. The in-process executor runs one worker per GPU (or N on CPU), each pulling
shards from a queue; on this machine a worker also has its own decode processes that prepare the next batches
(decode, resize, resample) while the model encodes the current one, and hand them back through the worker's
shared-memory blocks (DecodePool, transfer.py). A cluster's workers decode in the worker, between batches.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tarfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from mmindex.dataset import Dataset, shard_name
from mmindex.dataset.embeddings import EmbeddingStore, ShardSummary
from mmindex.embed.shard import Chunk, decoded_here, embed_shard, prepare_chunk
from mmindex.embed.transfer import Blocks, SharedBatch, pack
from mmindex.encoders.base import Preparer
from mmindex.encoders.device_decode import on_device
from mmindex.executors.processes import child_setup
from mmindex.parallel import ordered_map
from mmindex.sizes import counted
from mmindex.spaces import Space
from mmindex.stages import Each, Stage, Worker

_preparers: dict[str, Preparer] = {}


def _install_preparers(preparers: dict[str, Preparer]) -> None:
    """Decode process set-up: one thread each (they are many)."""
    child_setup()
    _preparers.update(preparers)
    torch.set_num_threads(1)


def _prepare_and_share(job: tuple[Chunk, str | None]) -> list[Any] | SharedBatch:
    """In a decode process: the batch goes back through shared memory, in the block the worker handed over where it
    fits (see transfer.py)."""
    chunk, block = job
    return pack(prepare_chunk(chunk, _preparers), into=block)


def _started(_: int) -> None:
    """A job that only makes the pool start a process (they start on demand, each importing torch: seconds)."""


class DecodePool:
    """A worker's decode processes, all started at once: they prepare the next batches (decode, resize, resample)
    while the model encodes the current one, and hand them back through the worker's shared-memory blocks."""

    def __init__(self, processes: int, preparers: dict[str, Preparer]):
        self.pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_install_preparers, initargs=(preparers,))
        list(self.pool.map(_started, range(processes)))
        self.ahead = 2 * processes
        self.blocks = Blocks(most=self.ahead + 2)  # the batches in flight, and the one being read

    def __call__(self, jobs: list[Chunk]) -> Iterator[contextlib.AbstractContextManager[list[Any]]]:
        """Each chunk's batch, in order (see shard.embed_shard)."""
        batches = ordered_map(self.pool, _prepare_and_share, ((chunk, self.blocks.take()) for chunk in jobs),
                              self.ahead, discard=self.blocks.release)
        try:
            for packed in batches:
                yield self.blocks.received(packed)
        finally:
            batches.close()  # a shard stopped early: the batches decoded ahead are released
            self.blocks.settle()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.blocks.close()


def decode_processes(asked: int | None, device: str, workers: int) -> int:
    """Decode processes per worker: ``--decode-workers``, else 1 on CPU (the model needs the cores), and for a GPU
    its share of the cores less one."""
    if asked is not None:
        return asked
    return 1 if device == "cpu" else max(1, min(8, (os.cpu_count() or 2) // workers - 1))


def torch_threads(asked: int | None, device: str, workers: int) -> int:
    """Torch threads per worker: ``--threads``, else CPU workers share the cores; a GPU worker's own CPU work needs
    few threads."""
    return asked or (max(1, (os.cpu_count() or 1) // workers) if device == "cpu" else 2)


class EmbedShards:
    """Embeds and commits one shard per element: a ShardSummary of what it holds, or of why it failed."""

    def __init__(self, root: str, space: Space, device: str, batch_size: int, decode_workers: int | None,
                 threads: int | None, decode: str):
        self.root, self.space, self.device, self.batch_size = root, space, device, batch_size
        self.decode_workers, self.threads, self.decode = decode_workers, threads, decode

    def setup(self, worker: Worker) -> None:
        """Loads the encoders on the worker's device. On a cluster's worker, torch keeps the threads the runner
        gave it unless ``--threads`` says otherwise (thread counts change float rounding), and decoding stays in
        the worker (a runner's workers may be daemons, which cannot start processes). Encoders that can decode
        on the device switch to it where ``--decode`` says so (see mmindex.encoders.device_decode). Decode
        processes are all started here, before the first shard, not one by one as its first batches ask."""
        self.on = worker.device or self.device
        threads = torch_threads(self.threads, self.on, worker.count) if worker.local else self.threads
        if threads:
            torch.set_num_threads(threads)
        self.store = EmbeddingStore(Dataset(self.root), self.space)
        self.encoders = self.space.load(self.on)
        if on_device(self.decode, self.on):
            for encoder in self.encoders.values():
                encoder.decode_on_device()
        preparers = {modality: encoder.preparer() for modality, encoder in self.encoders.items()}
        decoders = decode_processes(self.decode_workers, self.on, worker.count) if worker.local else 0
        self.pool = DecodePool(decoders, preparers) if decoders else None
        self.decoded = self.pool or decoded_here(preparers)

    def teardown(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def __call__(self, number: int) -> list[ShardSummary]:
        path = self.store.dataset.shard_path(number)
        try:
            result, times = embed_shard(number, path, self.encoders, self.decoded, self.batch_size)
        except (tarfile.TarError, OSError) as err:  # a damaged shard file: the other shards go on
            return [ShardSummary(number, failed=f"shard {shard_name(number)} is damaged ({err}): run `mmindex check "
                                                f"{self.store.dataset.root} --repair`, which rebuilds {path} from its "
                                                f"sources")]
        self.store.commit(result)
        return [ShardSummary.of(number, result.rows, seconds=dict(times.spent), waited=dict(times.waited),
                                 device=self.on)]


def declare(store: EmbeddingStore, pending: Iterable[int], device: str, batch_size: int,
            decode_workers: int | None, threads: int | None, decode: str, scratch: str) -> Stage:
    """Embedding ``pending`` shards of the store's dataset in its space."""
    shards = EmbedShards(store.dataset.root, store.space, device, batch_size, decode_workers, threads, decode)
    return Stage("embed", list(pending), [Each("EmbedShards", shards, int, runs="workers")], (ShardSummary,), scratch)


def devices(gpus: int | None, device: str, workers: int) -> list[str]:
    """The device of each worker on this machine; a clear error when GPUs are asked for and none are usable."""
    if gpus is not None:
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available < gpus:
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise RuntimeError(f"--gpus {gpus} asked for, but torch ({torch.__version__}, {build}) sees "
                               f"{counted(available, 'CUDA device')}. Check `nvidia-smi` and install a CUDA build of "
                               f"torch, or run on the CPU with --device cpu --workers N.")
        return [f"cuda:{i}" for i in range(gpus)]
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: torch sees no CUDA device; use --device cpu")
    return [device] * workers
