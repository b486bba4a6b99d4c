"""Prepared batches from decode processes to their worker through shared memory, not the result pipe.

A batch of 256 prepared 224 px images is 38 MB. Sent through a ProcessPoolExecutor's result pipe, it is
pickled, written in 64 KB pieces, read back and unpickled by one thread of the worker, which competes for the
GIL with the model's own loop: on a GPU that thread, not decoding or the model, bounded the rate. A decode
process instead copies the batch's arrays into one shared-memory block and sends only its name; the worker
copies them out once and removes the block. The same holds for arrays of different shapes, such as the bytes of
the JPEG files that a device decodes (mmindex.encoders.device_decode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

SMALLEST = 1 << 20   # below a megabyte the pipe is as fast, and no block is made
ALIGN = 64           # each array starts on a cache line


@dataclass(frozen=True)
class SharedBatch:
    """Where a packed batch's arrays are: per array, its position in the batch, shape, dtype and offset in the
    block (arrays may differ in shape: a batch of JPEG files' bytes); the other positions, such as rejected
    items, travel as they are in ``rest``."""

    block: str
    size: int
    arrays: list[tuple[int, tuple[int, ...], str, int]]
    rest: dict[int, Any]


def pack(prepared: list[Any]) -> list[Any] | SharedBatch:
    """``prepared``, or a SharedBatch holding its arrays back to back when they are big enough together."""
    arrays = {i: x for i, x in enumerate(prepared) if isinstance(x, np.ndarray)}
    offsets, size = [], 0
    for array in arrays.values():
        offsets.append(size)
        size += -(-array.nbytes // ALIGN) * ALIGN
    if size < SMALLEST:
        return prepared
    block = shared_memory.SharedMemory(create=True, size=size)
    try:
        for array, offset in zip(arrays.values(), offsets, strict=True):
            np.ndarray(array.shape, array.dtype, buffer=block.buf, offset=offset)[...] = array
        return SharedBatch(block.name, size, [(i, a.shape, a.dtype.str, offset) for (i, a), offset
                                              in zip(arrays.items(), offsets, strict=True)],
                           {i: x for i, x in enumerate(prepared) if i not in arrays})
    finally:
        block.close()  # the receiver removes it


@contextlib.contextmanager
def _opened(packed: SharedBatch) -> Iterator[shared_memory.SharedMemory]:
    """A batch's block, removed once the caller is done with it."""
    block = shared_memory.SharedMemory(name=packed.block)
    try:
        yield block
    finally:
        block.close()
        block.unlink()


def release(packed: list[Any] | SharedBatch) -> None:
    """Removes a batch's block unread (a run stopped before it got there)."""
    if isinstance(packed, SharedBatch):
        with _opened(packed):
            pass


def receive(packed: list[Any] | SharedBatch) -> list[Any]:
    """The batch as ``prepare_chunk`` made it: the block copied out in one piece (then removed), its arrays views
    of that copy."""
    if isinstance(packed, list):
        return packed
    with _opened(packed) as block:
        shared = np.ndarray((packed.size,), np.uint8, buffer=block.buf)
        copied = shared.copy()
        del shared  # the block's buffer cannot close while an array still views it
    prepared: list[Any] = [None] * (len(packed.arrays) + len(packed.rest))
    for position, shape, dtype, offset in packed.arrays:
        prepared[position] = np.ndarray(shape, np.dtype(dtype), buffer=copied, offset=offset)
    for position, item in packed.rest.items():
        prepared[position] = item
    return prepared
