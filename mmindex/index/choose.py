"""Which FAISS index suits n vectors of dimension d under a memory budget and a recall target.

    exact (Flat)     while n is small: exact search is fast enough and recall is 1.0
    IVF, Flat        when the raw float32 vectors fit the budget: exact distances within the probed lists
    IVF, SQ8         when only 8 bits per component fit (recall near IVF-Flat's at a quarter of the memory)
    IVF, PQm         when even that does not fit: m bytes per vector, the largest m that fits

What must fit is the codes held in memory at once. An index held whole holds them all. One built from parts
whose lists go to disk (a local dataset) holds only the parts being filled, each one shard's codes: there the
codes follow the largest shard, not n, and are at most SQ8's (re-ranking reads the exact float16 vectors, so
float32 codes on disk would only be more to read), and at most what keeps a list within LIST_BYTES, since each
probe reads one from disk (at LAION's 5.55B vectors in 65,536 lists: 48 bytes a vector). At 10M x 384 under
1 GB this chose SQ8 where PQ64 reached a recall of 0.79 (benchmarks/RESULTS.md).

The number of IVF lists grows with sqrt(n), as far as a training sample of a quarter of the budget allows; from
16,384 lists, vectors and queries find their lists through an HNSW graph of the centroids (as LAION's index
does), since comparing each with every centroid would cost more than scanning the lists.
How many are probed (nprobe), and for SQ8 and PQ how deep their candidates are re-ranked from the embeddings
on disk (not part of the budget), is tuned after building on held-out queries (tune.py) to the smallest
setting that meets the recall target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EXACT_BELOW = 20_000
TRAIN_PER_LIST = 40       # training vectors per IVF list (FAISS warns below 39)
MIN_TRAIN = 10_000        # training vectors whatever the budget (product quantizers want 39 x 256)
SAMPLE_SHARE = 4          # training holds at most the budget / 4 of float32 vectors (k-means needs as much again)
OVERHEAD = 1.2            # ids, list structures, lookup tables
HNSW_QUANTIZER_FROM = 16_384   # lists from which vectors find theirs through a graph of the centroids, not all
PARTS_AT_ONCE = 2         # parts a process fills at once (index.parts holds every executor to it)
LIST_BYTES = 4 * 2**20    # an on-disk list's codes at most: one probe, about 2 ms of reading at 2 GB/s


@dataclass(frozen=True)
class Choice:
    factory: str
    bytes_per_vector: int
    lists: int = 0

    @property
    def is_ivf(self) -> bool:
        return self.lists > 0


def training_sample(lists: int, dim: int, max_memory: int) -> int:
    """Vectors to train on: TRAIN_PER_LIST a list, as the budget allows (but MIN_TRAIN, and one a list, at least)."""
    return max(min(lists * TRAIN_PER_LIST, max_memory // SAMPLE_SHARE // (4 * dim)), MIN_TRAIN, lists)


def ivf_lists(n: int, sample: int | None = None) -> int:
    """About 4 sqrt(n) lists, a power of two, with enough vectors to train each (in a sample of at most
    ``sample`` vectors)."""
    lists = 2 ** round(math.log2(max(4 * math.sqrt(n), 16)))
    trainable = min(n, sample or n) // TRAIN_PER_LIST
    return max(16, min(lists, 2 ** int(math.log2(max(trainable, 1))), 65_536))


def choose(n: int, dim: int, max_memory: int, target_recall: float, largest_part: int | None = None) -> Choice:
    """The index for n vectors; ``largest_part``: the most vectors one part holds, where the lists go to disk."""
    flat = 4 * dim
    if (n < EXACT_BELOW or target_recall >= 1.0) and n * flat * OVERHEAD <= max_memory:
        return Choice("Flat", flat)
    lists = ivf_lists(n, max(max_memory // SAMPLE_SHARE // (4 * dim), MIN_TRAIN))
    ivf = f"IVF{lists}_HNSW32" if lists >= HNSW_QUANTIZER_FROM else f"IVF{lists}"
    held = n if largest_part is None else min(n, PARTS_AT_ONCE * largest_part)

    def fits(code_bytes: int) -> bool:
        on_disk = largest_part is None or n / lists * code_bytes <= LIST_BYTES
        return held * code_bytes * OVERHEAD <= max_memory and on_disk

    if largest_part is None and fits(flat):
        return Choice(f"{ivf},Flat", flat, lists)
    if fits(dim):
        return Choice(f"{ivf},SQ8", dim, lists)
    for m in sorted((m for m in range(1, dim + 1) if dim % m == 0 and m <= dim // 2), reverse=True):
        if fits(m):
            return Choice(f"{ivf},PQ{m}", m, lists)
    raise MemoryError(f"{n:,} vectors of dimension {dim} do not fit in {max_memory:,} bytes even at 1 byte "
                      f"per vector; raise --max-memory")
