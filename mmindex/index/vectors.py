"""One modality's committed vectors, shard by shard, without loading them all into memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mmindex.dataset.embeddings import EmbeddingStore, embedded_keys


class Rows:
    """Some rows of an array of vectors (memory-mapped), read only when indexed: the part of a shard's vectors an
    index holds when it leaves near-duplicates out. A slice is Rows again; other indexing, and numpy, read them."""

    def __init__(self, array: np.ndarray, rows: np.ndarray | list[int]):
        self.array, self.rows = array, np.asarray(rows, np.int64)
        self.shape = (len(self.rows), *array.shape[1:])
        self.size, self.dtype = int(np.prod(self.shape)), array.dtype

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice | np.ndarray | int) -> Rows | np.ndarray:
        return Rows(self.array, self.rows[index]) if isinstance(index, slice) else self.array[self.rows[index]]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self.array[self.rows], dtype)


class Unmapped:
    """A memory-mapped array of vectors read with plain reads instead, when indexed: the pages go to the kernel's
    cache, not into this process's memory. A build reads every vector once or twice; mapped, each page it touched
    would stay resident in the process (a 10M x 384 build's RSS would hold its 7.7 GB of embeddings). A slice is
    Unmapped again (nothing read); an array of rows, and numpy, read them: in blocks where many rows are wanted,
    one by one where few are."""

    BLOCK = 8_192   # rows read at once

    def __init__(self, path: str, offset: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, np.dtype(dtype)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.size = int(np.prod(shape, dtype=np.int64))

    @classmethod
    def of(cls, array: np.ndarray) -> np.ndarray | Unmapped:
        """``array`` unmapped if it is a map of a file, else as it is."""
        if isinstance(array, np.memmap) and array.filename and array.flags.c_contiguous and len(array):
            return cls(array.filename, array.offset, array.shape, array.dtype)
        return array

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: slice | np.ndarray | list[int]) -> Unmapped | np.ndarray:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise IndexError("Unmapped vectors are sliced with a step of 1")
            stop = max(start, stop)
            return Unmapped(self.path, self.offset + start * self.row_bytes, (stop - start, *self.shape[1:]),
                            self.dtype)
        return self._rows(np.asarray(index, np.int64))

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        return np.asarray(self._read(0, len(self)), dtype)

    def _read(self, start: int, stop: int) -> np.ndarray:
        with open(self.path, "rb") as file:
            data = os.pread(file.fileno(), (stop - start) * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(data, self.dtype).reshape(stop - start, *self.shape[1:])

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        wanted, where = np.unique(rows, return_inverse=True)
        out = np.empty((len(wanted), *self.shape[1:]), self.dtype)
        bounds = np.searchsorted(wanted, np.arange(0, len(self) + self.BLOCK, self.BLOCK))
        with open(self.path, "rb") as file:
            for block in np.flatnonzero(np.diff(bounds)):   # the blocks that hold wanted rows
                low, high, start = bounds[block], bounds[block + 1], int(block) * self.BLOCK
                if high - low > self.BLOCK // 16:   # many of its rows: one read of the block
                    out[low:high] = self._read(start, min(start + self.BLOCK, len(self)))[wanted[low:high] - start]
                    continue
                for i in range(low, high):          # few: each row read into its place
                    offset = self.offset + int(wanted[i]) * self.row_bytes
                    os.preadv(file.fileno(), [memoryview(out[i]).cast("B")], offset)
        return out[where.reshape(-1)].reshape(*rows.shape, *self.shape[1:])


@dataclass(frozen=True)
class ShardVectors:
    number: int
    keys: list[str] | None       # keys[i] is the sample of vectors[i]; None: not read (a build of millions of
                                 # vectors reads keys a shard at a time, where it needs them)
    vectors: np.ndarray | Rows | Unmapped   # float16, memory-mapped (or Unmapped) where the file is local

    def __len__(self) -> int:
        return len(self.vectors)

    def without_keys(self) -> ShardVectors:
        return ShardVectors(self.number, None, self.vectors)

    def unmapped(self) -> ShardVectors:
        return ShardVectors(self.number, self.keys, Unmapped.of(self.vectors))


def shard_vectors(store: EmbeddingStore, number: int, modality: str, keys: bool = True) -> ShardVectors:
    """A shard's vectors of ``modality``, with their keys unless ``keys`` is False (a build reads the vectors of
    every shard several times, the keys once)."""
    table, arrays = store.read(number)  # refuses damaged files, saying how to repair them
    return ShardVectors(number, embedded_keys(table, modality) if keys else None,
                        arrays.get(modality, np.zeros((0, 0), np.float16)))


def modality_shards(store: EmbeddingStore, modality: str, numbers: list[int] | None = None) -> Iterator[ShardVectors]:
    for number in sorted(store.committed() if numbers is None else numbers):
        yield shard_vectors(store, number, modality)


def total(shards: list[ShardVectors]) -> int:
    return sum(len(s) for s in shards)


def sample_rows(shards: list[ShardVectors], size: int, seed: int = 0) -> np.ndarray:
    """``size`` vectors drawn uniformly without replacement across shards, as float32 (filled in place: a
    training sample is the largest thing a build holds, so it is held once)."""
    n = total(shards)
    picks = np.sort(np.random.default_rng(seed).choice(n, size=min(size, n), replace=False))
    dim = next((s.vectors.shape[1] for s in shards if len(s)), 0)
    out = np.empty((len(picks), dim), np.float32)
    start = filled = 0
    for shard in shards:
        end = start + len(shard)
        local = picks[(picks >= start) & (picks < end)] - start
        if len(local):
            out[filled:filled + len(local)] = shard.vectors[local]
            filled += len(local)
        start = end
    return out if len(out) else np.zeros((0, 0), np.float32)


def split_tail(shards: list[ShardVectors], count: int) -> tuple[list[ShardVectors], list[ShardVectors]]:
    """``shards`` without their last ``count`` vectors, and those vectors: both as shard pieces, in order."""
    head, tail = list(shards), []
    while count > 0 and head:
        last = head.pop()
        cut = max(0, len(last) - count)
        if cut:
            head.append(ShardVectors(last.number, None if last.keys is None else last.keys[:cut], last.vectors[:cut]))
        tail.insert(0, ShardVectors(last.number, None if last.keys is None else last.keys[cut:], last.vectors[cut:]))
        count -= len(last) - cut
    return head, tail
