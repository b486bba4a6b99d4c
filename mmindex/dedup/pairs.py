"""Finding every pair of items whose descriptors are at least ``threshold`` alike, and grouping them, in memory
bounded by a budget rather than by the number of items.

An item has one or more descriptor views (mmindex.dedup.descriptors); view 0 is the whole item. Two items are
alike by the best cosine of one's whole view against any view of the other, both ways. So the candidates come
from a FAISS range search of whole views, at the threshold, over every view of the items compared against. The
search is exact (Flat) while the views are few, and over an inverted file (IVF, the lists of a k-means
clustering, as SemDeDup's clusters) beyond: a whole view is compared with the views in its ``NPROBE`` nearest
lists only. The IVF's coarse quantizer is trained once on a bounded sample; the views it lists are then added a
block at a time, each block as large as ``max_memory`` allows, and every query is searched against each block
(the union is what one index over all of them would find). Each candidate pair's similarity is then computed
exactly, both ways, from the stored descriptors, and that decides. Descriptors stay where they are (float16,
memory-mapped, one array per shard: ``Items``) and are read a block of queries or targets at a time.

Incremental runs search the new items' whole views against every item, and the old items' whole views against
the new items' views: with an exact index the pairs found are then those a full run finds.
"""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np

from mmindex.index.choose import TRAIN_PER_LIST, ivf_lists

FLAT_BELOW = 20_000    # views searched exactly below this many (all pairs of n grow as n squared)
NPROBE = 16
BLOCK = 2_048          # queries per range search
ADD_BATCH = 65_536     # views added to an index at a time
MAX_MEMORY = 4 * 2**30


class Items:
    """Descriptor views of items, as arrays (items, views, dim) one after another (a shard's each, float16 and
    memory-mapped where local): read a block at a time, never all at once."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = [part for part in parts if len(part)]
        self.starts = np.cumsum([0] + [len(part) for part in self.parts])
        self.per_item, self.dim = self.parts[0].shape[1:] if self.parts else (1, 1)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def item(self, i: int) -> np.ndarray:
        """Item ``i``'s views (views, dim), as stored."""
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.parts[part][i - self.starts[part]]

    def rows(self, start: int, stop: int, whole: bool = False) -> np.ndarray:
        """Items ``start`` to ``stop`` as float32 rows: every view of each (in item order), or its whole view only."""
        out = []
        for part, first, end in zip(self.parts, self.starts[:-1], self.starts[1:], strict=True):
            if max(start, first) < min(stop, end):
                block = part[max(start, first) - first:min(stop, end) - first]
                out.append(block[:, 0] if whole else block.reshape(-1, self.dim))
        return np.ascontiguousarray(np.concatenate(out) if out else np.zeros((0, self.dim)), np.float32)

    def views(self, ids: np.ndarray) -> np.ndarray:
        """float32 views by their number among every view (item * per_item + view), in the order given."""
        order = np.argsort(ids, kind="stable")
        out = np.empty((len(ids), self.dim), np.float32)
        for row, view in zip(order, ids[order], strict=True):
            out[row] = self.item(int(view) // self.per_item)[int(view) % self.per_item]
        return out


def _trained_ivf(targets: Items, max_memory: int, seed: int = 0) -> faiss.Index:
    """An empty IVF over inner products, its lists trained on a sample of ``targets``' views that fits the budget."""
    views = len(targets) * targets.per_item
    lists = ivf_lists(views)
    index = faiss.index_factory(targets.dim, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
    size = min(views, lists * TRAIN_PER_LIST, max(lists, max_memory // (2 * 4 * targets.dim)))   # k-means' room
    index.train(targets.views(np.random.default_rng(seed).choice(views, size, replace=False)))
    faiss.extract_index_ivf(index).nprobe = NPROBE
    return index


def _indexes(targets: Items, max_memory: int) -> Iterator[tuple[int, faiss.Index]]:
    """Indexes over every view of ``targets``, a block of items at a time, each with the view number it starts at."""
    views = len(targets) * targets.per_item
    if views < FLAT_BELOW:
        index = faiss.IndexFlatIP(targets.dim)
        index.add(targets.rows(0, len(targets)))
        yield 0, index
        return
    empty = _trained_ivf(targets, max_memory)
    # items whose views fit half the budget: the lists grow by doubling, and each batch added is copied once
    per_block = max(1, max_memory // (2 * 4 * targets.dim * targets.per_item))
    add = max(1, min(ADD_BATCH // targets.per_item, per_block // 8))
    for start in range(0, len(targets), per_block):
        index = faiss.clone_index(empty)
        for first in range(start, min(start + per_block, len(targets)), add):
            index.add(targets.rows(first, min(first + add, start + per_block, len(targets))))
        yield start * targets.per_item, index


def _candidates(queries: Items, targets: Items, threshold: float, max_memory: int,
                itself: int | None = None) -> set[tuple[int, int]]:
    """(query item, target item) pairs where the query's whole view meets one of the target's views; but an item
    and itself, where query item q is target item q + ``itself``."""
    found: set[tuple[int, int]] = set()
    for offset, index in _indexes(targets, max_memory):
        for start in range(0, len(queries), BLOCK):
            limits, _, ids = index.range_search(queries.rows(start, start + BLOCK, whole=True), threshold - 1e-4)
            pairs = np.stack([start + np.repeat(np.arange(len(limits) - 1), np.diff(limits).astype(np.int64)),
                              (offset + ids) // targets.per_item], 1)
            if itself is not None:
                pairs = pairs[pairs[:, 0] + itself != pairs[:, 1]]
            found.update(map(tuple, np.unique(pairs, axis=0).tolist()))
        index.reset()   # its views go before the next block's come
    return found


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Two items' similarity from their views (views, dim): the best whole-against-any-view cosine, both ways."""
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(max((b32 @ a32[0]).max(), (a32 @ b32[0]).max()))


def near_pairs(old: Items, new: Items, threshold: float, max_memory: int = MAX_MEMORY) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity), i < j, indexes over old + new items, with at least one item new, whose
    similarity is at least ``threshold``: new against all, and old against new. The views of the items searched
    against take at most about ``max_memory`` bytes at a time."""
    if not len(new):
        return []
    every, offset = Items(old.parts + new.parts), len(old)
    candidates = {(offset + q, t) for q, t in _candidates(new, every, threshold, max_memory, itself=offset)}
    if len(old):
        candidates |= {(q, offset + t) for q, t in _candidates(old, new, threshold, max_memory)}
    pairs = sorted({(min(i, j), max(i, j)) for i, j in candidates})
    found = [(i, j, similarity(every.item(i), every.item(j))) for i, j in pairs]
    return [(i, j, s) for i, j, s in found if s >= threshold]


def components(count: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components of ``count`` items joined by ``pairs``, each sorted, of two items or more."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    return sorted(members for members in groups.values() if len(members) > 1)


def first_of_each(vectors: np.ndarray, threshold: float) -> list[int]:
    """Rows of ``vectors`` (unit vectors of ranked hits, best first) to keep: the first of each connected
    component of hits whose cosine is at least ``threshold`` (clip-retrieval's range check over a query's hits)."""
    unit = np.ascontiguousarray(vectors, np.float32)
    close = np.argwhere(np.triu(unit @ unit.T, 1) >= threshold)
    grouped = {i for members in components(len(unit), list(map(tuple, close.tolist()))) for i in members[1:]}
    return [i for i in range(len(unit)) if i not in grouped]
