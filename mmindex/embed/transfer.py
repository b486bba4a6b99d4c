"""Prepared batches from decode processes to their worker through shared memory, not the result pipe.

A batch of 256 prepared 224 px images is 38 MB. Sent through a ProcessPoolExecutor's result pipe, it is
pickled, written in 64 KB pieces, read back and unpickled by one thread of the worker, which competes for the
GIL with the model's own loop: on a GPU that thread, not decoding or the model, bounded the rate. A decode
process instead copies the batch's arrays into one shared-memory block and sends only its name; the worker
copies them out once and removes the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

SMALLEST = 1 << 20   # below a megabyte the pipe is as fast, and no block is made


@dataclass(frozen=True)
class SharedBatch:
    """Where a packed batch's arrays are: the block, their common shape and dtype, and the positions they held
    in the batch (the other positions, such as rejected items, travel as they are in ``rest``)."""

    block: str
    shape: tuple[int, ...]
    dtype: str
    positions: list[int]
    rest: dict[int, Any]


def pack(prepared: list[Any]) -> list[Any] | SharedBatch:
    """``prepared``, or a SharedBatch holding its arrays, when they share a shape and dtype and are big enough."""
    arrays = {i: x for i, x in enumerate(prepared) if isinstance(x, np.ndarray)}
    if not arrays:
        return prepared
    first = next(iter(arrays.values()))
    if any(a.shape != first.shape or a.dtype != first.dtype for a in arrays.values()):
        return prepared
    if first.nbytes * len(arrays) < SMALLEST:
        return prepared
    block = shared_memory.SharedMemory(create=True, size=first.nbytes * len(arrays))
    try:
        stacked = np.ndarray((len(arrays), *first.shape), first.dtype, buffer=block.buf)
        for row, array in enumerate(arrays.values()):
            stacked[row] = array
        del stacked  # the block's buffer cannot close while an array still views it
        return SharedBatch(block.name, first.shape, first.dtype.str, list(arrays),
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
    """The batch as ``prepare_chunk`` made it (arrays copied out of the block, which is then removed)."""
    if isinstance(packed, list):
        return packed
    with _opened(packed) as block:
        shared = np.ndarray((len(packed.positions), *packed.shape), np.dtype(packed.dtype), buffer=block.buf)
        rows = shared.copy()
        del shared  # the block's buffer cannot close while an array still views it
    prepared: list[Any] = [None] * (len(packed.positions) + len(packed.rest))
    for row, position in enumerate(packed.positions):
        prepared[position] = rows[row]
    for position, item in packed.rest.items():
        prepared[position] = item
    return prepared
