"""Prepared batches from decode processes to their worker through shared memory, not the result pipe.

A batch of 256 prepared 224 px images is 38 MB. Sent through a ProcessPoolExecutor's result pipe, it is
pickled, written in 64 KB pieces, read back and unpickled by one thread of the worker, which competes for the
GIL with the model's own loop: on a GPU that thread, not decoding or the model, bounded the rate. A decode
process instead copies the batch's arrays into a shared-memory block and sends only its name; the worker reads
the arrays where they are. The same holds for arrays of different shapes, such as the bytes of the JPEG files that
a device decodes (mmindex.encoders.device_decode).

Blocks are reused. A new block's pages are faulted in by the process that fills it and again by the worker that
reads it, one 4 KB page at a time, and for a 38 MB batch that cost several times the copy itself
(benchmarks/RESULTS.md). So the worker owns its blocks (Blocks): it hands each job a free block to fill, takes it
back once the batch is encoded, and keeps a block that a decode process had to make (none was free, or the batch
outgrew it), up to a bound. Each process maps a block once and keeps it mapped.

Where shared memory is short (a container's /dev/shm is 64 MB unless it is given more), a batch that no free block
holds and that a new block would not fit goes through the pipe instead, slower but whole: a process that writes a
block past the end of /dev/shm is killed (SIGBUS).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

log = logging.getLogger("mmindex")
SHARED_MEMORY = "/dev/shm"   # where Linux keeps shared memory (a tmpfs)
SMALLEST = 1 << 20   # below a megabyte the pipe is as fast, and no block is used
ALIGN = 64           # each array starts on a cache line

_mapped: dict[str, shared_memory.SharedMemory] = {}   # the blocks this process keeps mapped, by name


@dataclass(frozen=True)
class SharedBatch:
    """Where a packed batch's arrays are: per array, its position in the batch, shape, dtype and offset in the
    block (arrays may differ in shape: a batch of JPEG files' bytes); the other positions, such as rejected
    items, travel as they are in ``rest``."""

    block: str
    arrays: list[tuple[int, tuple[int, ...], str, int]]
    rest: dict[int, Any]


def _attached(name: str) -> shared_memory.SharedMemory:
    if name not in _mapped:
        _mapped[name] = shared_memory.SharedMemory(name=name)
    return _mapped[name]


def pack(prepared: list[Any], into: str | None = None) -> list[Any] | SharedBatch:
    """``prepared``, or a SharedBatch holding its arrays back to back when they are big enough together: in block
    ``into`` (a free block of the worker's), or in a new block where none was given or it is too small."""
    arrays = {i: x for i, x in enumerate(prepared) if isinstance(x, np.ndarray)}
    offsets, size = [], 0
    for array in arrays.values():
        offsets.append(size)
        size += -(-array.nbytes // ALIGN) * ALIGN
    if size < SMALLEST:
        return prepared
    given = _attached(into) if into else None
    if given is not None and given.size < size:  # the worker swaps it for the larger one (Blocks._done)
        _mapped.pop(given.name).close()
        given = None
    if given is None and not _room_for(size):
        _say_shared_memory_is_short()
        return prepared
    block = given or shared_memory.SharedMemory(create=True, size=size)
    for array, offset in zip(arrays.values(), offsets, strict=True):
        np.ndarray(array.shape, array.dtype, buffer=block.buf, offset=offset)[...] = array
    if block is not given:
        block.close()  # the worker keeps it or removes it; this process maps it again if it is handed back
    return SharedBatch(block.name, [(i, a.shape, a.dtype.str, offset) for (i, a), offset
                                    in zip(arrays.items(), offsets, strict=True)],
                       {i: x for i, x in enumerate(prepared) if i not in arrays})


def _room_for(size: int) -> bool:
    """Whether Linux's shared memory (/dev/shm) has room for a new block of ``size`` bytes, with as much again to
    spare for the other decode processes' (elsewhere, True: shared memory is not a small file system there)."""
    try:
        found = os.statvfs(SHARED_MEMORY)
    except OSError:
        return True
    return found.f_bavail * found.f_frsize >= 2 * size


@functools.cache
def _say_shared_memory_is_short() -> None:
    """Once per process: shared memory is short, and what gives it room."""
    log.warning("embed: %s has no room for another batch: batches go through a pipe instead, more slowly. Give it "
                "more (docker run --shm-size=2g), or lower --batch-size or --decode-workers", SHARED_MEMORY)


def _remove(name: str) -> None:
    block = _mapped.pop(name, None) or shared_memory.SharedMemory(name=name)
    with contextlib.suppress(BufferError):  # an array still views it: the mapping goes when the array does
        block.close()
    block.unlink()


class Blocks:
    """A worker's shared-memory blocks: ``take`` gives a job a free one to fill (or None: the decode process makes
    one), ``received`` reads a batch and frees its block afterwards. Batches come back in the order jobs took
    blocks (mmindex.parallel.ordered_map), which is how a block handed out is known to be free again."""

    def __init__(self, most: int):
        self.most = most                    # blocks kept: as many as batches in flight, and the one being read
        self.kept: set[str] = set()
        self.free: list[str] = []
        self.handed: deque[str | None] = deque()

    def take(self) -> str | None:
        block = self.free.pop() if self.free else None
        self.handed.append(block)
        return block

    @contextlib.contextmanager
    def received(self, packed: list[Any] | SharedBatch) -> Iterator[list[Any]]:
        """The batch as ``prepare_chunk`` made it, its arrays views of the block, which is free again after."""
        if isinstance(packed, list):
            try:
                yield packed
            finally:
                self._done(None)
            return
        block = _attached(packed.block)
        prepared: list[Any] = [None] * (len(packed.arrays) + len(packed.rest))
        for position, shape, dtype, offset in packed.arrays:
            prepared[position] = np.ndarray(shape, np.dtype(dtype), buffer=block.buf, offset=offset)
        for position, item in packed.rest.items():
            prepared[position] = item
        try:
            yield prepared
        finally:
            prepared.clear()
            self._done(packed.block)

    def release(self, packed: list[Any] | SharedBatch) -> None:
        """Frees a batch's block unread (a run stopped before it got there)."""
        self._done(packed.block if isinstance(packed, SharedBatch) else None)

    def settle(self) -> None:
        """After a shard: blocks handed to jobs that never ran (a run stopped early) are free again."""
        while self.handed:
            self._done(None)

    def close(self) -> None:
        self.settle()
        for name in self.kept:
            _remove(name)
        self.kept.clear()
        self.free.clear()

    def _done(self, used: str | None) -> None:
        """The block handed to the oldest job, and the one its batch came in (the same, or one the decode process
        made), are free again: kept while there is room, else removed. A block the batch outgrew is swapped for the
        new one, so that the blocks kept grow to the largest batch."""
        handed = self.handed.popleft()
        if used and used != handed and handed in self.kept:
            self.kept.discard(handed)
            _remove(handed)
            handed = None
        for name in (handed, used):
            if not name or name in self.free:
                continue
            if name not in self.kept and len(self.kept) >= self.most:
                _remove(name)
                continue
            self.kept.add(name)
            self.free.append(name)
