"""Finding every pair of items whose descriptors are at least ``threshold`` alike, and grouping them.

An item has one or more descriptor views (mmindex.dedup.descriptors); view 0 is the whole item. Two items are
alike by the best cosine of one's whole view against any view of the other, both ways. So the candidates come
from one FAISS index over every view of the items compared against: a range search of whole views at the
threshold. The index is exact (Flat) while it is small, and an inverted file (IVF, the lists of a k-means
clustering, as SemDeDup's clusters) beyond: a whole view is compared with the views in its ``nprobe`` nearest
lists only. Each candidate pair's similarity is then computed exactly, both ways, from the stored descriptors,
and that decides. Queries go in blocks, so the results in memory stay bounded; the index holds the views it
searches (4 bytes per dimension each).

Incremental runs search the new items' whole views against every item, and the old items' whole views against
the new items' views: with an exact index the pairs found are then those a full run finds.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from mmindex.index.choose import TRAIN_PER_LIST, ivf_lists

FLAT_BELOW = 20_000    # views searched exactly below this many (all pairs of n grow as n squared)
NPROBE = 16
BLOCK = 2_048


@dataclass(frozen=True)
class Items:
    """Descriptor views of items, as float32 (items, views, dim)."""

    views: np.ndarray

    def __len__(self) -> int:
        return len(self.views)

    def whole(self) -> np.ndarray:
        return np.ascontiguousarray(self.views[:, 0, :], np.float32)


def _index(views: np.ndarray, seed: int = 0) -> faiss.Index:
    """An inner-product index over ``views`` (rows), exact while small, IVF beyond."""
    dim = views.shape[1]
    if len(views) < FLAT_BELOW:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = ivf_lists(len(views))
        index = faiss.index_factory(dim, f"IVF{lists},Flat", faiss.METRIC_INNER_PRODUCT)
        sample = views[np.random.default_rng(seed).choice(len(views), min(len(views), lists * TRAIN_PER_LIST),
                                                          replace=False)]
        index.train(sample)
        faiss.extract_index_ivf(index).nprobe = NPROBE
    for start in range(0, len(views), 65_536):
        index.add(views[start:start + 65_536])
    return index


def _candidates(queries: np.ndarray, targets: Items, threshold: float) -> set[tuple[int, int]]:
    """(query row, target item) pairs where the query's whole view meets one of the target's views."""
    per_item = targets.views.shape[1]
    index = _index(np.ascontiguousarray(targets.views.reshape(-1, targets.views.shape[2]), np.float32))
    found: set[tuple[int, int]] = set()
    for start in range(0, len(queries), BLOCK):
        limits, _, ids = index.range_search(queries[start:start + BLOCK], threshold - 1e-4)
        rows = start + np.repeat(np.arange(len(limits) - 1), np.diff(limits).astype(np.int64))
        found.update(map(tuple, np.unique(np.stack([rows, ids // per_item], 1), axis=0).tolist()))
    return found


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Two items' similarity from their views (views, dim): the best whole-against-any-view cosine, both ways."""
    a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(max((b32 @ a32[0]).max(), (a32 @ b32[0]).max()))


def near_pairs(old: Items, new: Items, threshold: float) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity), i < j, indexes over old + new items, with at least one item new, whose
    similarity is at least ``threshold``: new against all, and old against new."""
    if not len(new):
        return []
    every = Items(np.concatenate([old.views, new.views])) if len(old) else new
    offset = len(old)
    candidates = {(offset + q, t) for q, t in _candidates(new.whole(), every, threshold)}
    if len(old):
        candidates |= {(q, offset + t) for q, t in _candidates(old.whole(), new, threshold)}
    out = {}
    for i, j in candidates:
        if i != j:
            pair = (min(i, j), max(i, j))
            if pair not in out:
                out[pair] = similarity(every.views[pair[0]], every.views[pair[1]])
    return sorted((i, j, s) for (i, j), s in out.items() if s >= threshold)


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
