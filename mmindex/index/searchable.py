"""Searching a built index the way it was tuned: its search knob set, and lossy scores re-ranked exactly.

Compressed codes (SQ8, PQ, OPQ) save memory but rank coarsely: IVF-PQ alone finds a fraction of the true
ten nearest. So for such indexes k x ``rerank`` candidates are taken from FAISS and re-scored with the
exact float16 vectors of the committed embeddings, which stay on disk (memory-mapped) and so cost no part
of the memory budget. The scores a search returns are then exact cosines whatever the index type, which
also keeps results of several modalities on one scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from mmindex.native import drop_pages

RERANK_BLOCK = 64   # queries re-scored at a time (bounds memory: block x candidates x dim)
SEARCH_BLOCK = 256  # queries searched at a time (bounds the pages of on-disk lists a batch holds) ...
BLOCK_LIST_BYTES = 64 * 2**20  # ... and fewer where their lists would hold more than this (10M SQ8: 8 MB a query)


class ExactVectors:
    """The vector of any id of an index, read from the embeddings' per-shard arrays (in id order)."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        self.starts = np.cumsum([0] + [len(a) for a in arrays])
        self.dim = next((a.shape[1] for a in arrays if a.size), 0)

    def take(self, ids: np.ndarray) -> np.ndarray:
        """float32 vectors of ``ids`` (any shape); -1, FAISS's "no result", gives zeros."""
        flat = ids.ravel()
        out = np.zeros((len(flat), self.dim), np.float32)
        shard = np.searchsorted(self.starts, flat, side="right") - 1
        for s in np.unique(shard[flat >= 0]):
            rows = (shard == s) & (flat >= 0)
            out[rows] = self.arrays[s][flat[rows] - self.starts[s]]
        return out.reshape(*ids.shape, self.dim)


def keeps_exact_vectors(index: faiss.Index) -> bool:
    """Whether the index stores float32 vectors, so its own scores are exact inner products."""
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    try:
        return inner.sa_code_size() >= 4 * index.d
    except RuntimeError:  # an index type that does not say: treat its scores as approximate
        return False


def search_knob(index: faiss.Index) -> tuple[str, list[int]] | None:
    """The parameter that trades speed for recall, with the values worth trying (ascending)."""
    space = faiss.ParameterSpace()
    space.initialize(index)
    names = {space.parameter_ranges.at(i).name for i in range(space.parameter_ranges.size())}
    if "nprobe" in names:
        lists = faiss.extract_index_ivf(index).nlist
        return "nprobe", [v for v in (2**i for i in range(17)) if v < lists] + [lists]
    if "efSearch" in names:
        return "efSearch", [2**i for i in range(4, 13)]
    return None


def apply_parameters(index: faiss.Index, parameters: dict[str, Any]) -> None:
    if parameters:
        faiss.ParameterSpace().set_index_parameters(index, ",".join(f"{k}={v}" for k, v in parameters.items()))


def exact_scores(exact: ExactVectors, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Each query's inner product with each of its candidate ids (-inf for FAISS's -1)."""
    scores = np.empty(candidates.shape, np.float32)
    for start in range(0, len(queries), RERANK_BLOCK):
        block = slice(start, start + RERANK_BLOCK)
        scores[block] = np.einsum("qd,qcd->qc", queries[block], exact.take(candidates[block]))
    scores[candidates < 0] = -np.inf
    return scores


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k best (scores, ids), best first; -1 where a row has fewer than k."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
    best_ids[~np.isfinite(best_scores)] = -1
    return best_scores, best_ids


@dataclass
class SearchableIndex:
    """A FAISS index with the settings it was tuned to: its knob (nprobe, efSearch) and re-rank depth."""

    index: faiss.Index
    exact: ExactVectors | None = None   # needed when rerank > 0
    rerank: int = 0        # 0: the index's own scores; f: k x f candidates re-scored from ``exact``
    hidden: range | None = None   # ids no search returns: held-out tuning queries that an IVF index already holds

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    def set(self, parameters: dict[str, Any], rerank: int) -> None:
        apply_parameters(self.index, parameters)
        self.rerank = rerank

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, np.float32)
        if not self.rerank:
            return self.candidates(queries, k)
        _, candidates = self.candidates(queries, min(k * self.rerank, self.ntotal))
        return top_k(exact_scores(self.exact, queries, candidates), candidates, k)

    def candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The index's own k best, as it is set (never a ``hidden`` id), a block of queries at a time: after each,
        the pages of on-disk lists it touched are let go (release_pages), so a batch of any size holds one
        block's."""
        size = self._block()
        blocks = [self._candidates(queries[start:start + size], k) for start in range(0, max(len(queries), 1), size)]
        return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])

    def _block(self) -> int:
        """Queries a block: SEARCH_BLOCK, or fewer where the lists they probe would hold over BLOCK_LIST_BYTES."""
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is None or not ivf.ntotal:
            return SEARCH_BLOCK
        per_query = ivf.nprobe * ivf.ntotal / ivf.nlist * (ivf.code_size + 8)
        return max(1, min(SEARCH_BLOCK, int(BLOCK_LIST_BYTES // per_query)))

    def _candidates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            if self.hidden is None:
                return self.index.search(queries, k)
            # an IVF index takes its probe count from the parameters it is given, not from itself
            ivf = faiss.extract_index_ivf(self.index)
            hidden = faiss.IDSelectorRange(self.hidden.start, self.hidden.stop)  # referenced until the search ends
            outside = faiss.IDSelectorNot(hidden)
            parameters = faiss.SearchParametersIVF(sel=outside, nprobe=ivf.nprobe)
            return self.index.search(queries, k, params=parameters)
        finally:
            release_pages(self.index)


def release_pages(index: faiss.Index) -> None:
    """Lets go of the pages of an index's on-disk lists that a search touched: they stay in the kernel's cache
    (the next search finds them there), but not in this process, whose memory then does not grow with the lists
    it has read (a 10M-vector index's 720 MB of lists, all touched by a thousand queries)."""
    try:
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
    except RuntimeError:
        return
    if isinstance(lists, faiss.OnDiskInvertedLists) and lists.totsize:
        drop_pages(int(lists.ptr), lists.totsize)


def describe_search(info: dict[str, Any]) -> str:
    """How an index is searched, from its info: 'exact', 'nprobe=8, re-rank 4x' ..."""
    parts = [f"{k}={v}" for k, v in info["parameters"].items()]
    if info.get("rerank"):
        parts.append(f"re-rank {info['rerank']}x")
    return ", ".join(parts) or "exact"
