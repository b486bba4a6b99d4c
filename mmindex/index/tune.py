"""Measuring an index on the queries it will get, and tuning it to a recall@10 target against exact search.

The queries are held out: vectors the index does not hold while it is tuned (a query that is in the index
finds itself, and in a graph index its linked neighbours, which flatters the figure). They come from the
index's own modality — its last vectors, added only after tuning (shards are in key order, a fair shuffle)
— and from every other modality of the space, since a caption searching the image index is the usual
cross-modal search. The search knob (nprobe, efSearch) is raised, and for lossy codes the re-rank depth
with it, until recall over all queries meets the target (or stops improving); recall is recorded per query
modality too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.index.searchable import SearchableIndex, exact_scores, search_knob, top_k
from mmindex.index.vectors import ShardVectors, modality_shards

K = 10
QUERIES = 1_000          # in all, shared equally between the query modalities
EXACT_BLOCK = 8_192      # vectors scored per step of the exact search (bounds its memory: queries x block)
RERANK_FACTORS = (1, 2, 4, 8, 16, 32, 64, 128)
PLATEAU = 0.001          # a knob doubling that gains less recall than this ends the search for the target


@dataclass(frozen=True)
class TuningQueries:
    vectors: np.ndarray      # float32, one query per row
    modalities: list[str]    # where each query came from
    truth: np.ndarray        # ids of its exact K nearest in the index (-1 pads an index smaller than K)


@dataclass
class Tuned:
    parameters: dict[str, Any] = field(default_factory=dict)
    rerank: int = 0
    recall: float = 1.0
    by_query: dict[str, float] = field(default_factory=dict)


def exact_neighbours(shards: list[ShardVectors], queries: np.ndarray, k: int = K) -> np.ndarray:
    """Ground truth: ids of the k best inner products over every vector (ids in the order of ``shards``), best
    first; -1 pads rows when there are fewer than k vectors."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    offset = 0
    for shard in shards:
        for start in range(0, len(shard), EXACT_BLOCK):
            block = np.asarray(shard.vectors[start:start + EXACT_BLOCK], np.float32)
            scores = queries @ block.T
            if scores.shape[1] > k:  # the block's k best first: merging all its scores copied them three times
                columns = np.argpartition(scores, -k, axis=1)[:, -k:]
                scores = np.take_along_axis(scores, columns, axis=1)
            else:
                columns = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
            both_scores = np.concatenate([best_scores, scores], axis=1)
            both_ids = np.concatenate([best_ids, columns + (offset + start)], axis=1)
            top = np.argpartition(-both_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(both_scores, top, axis=1)
            best_ids = np.take_along_axis(both_ids, top, axis=1)
        offset += len(shard)
    return top_k(best_scores, best_ids, k)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query: the share of its exact nearest found (queries with no possible answer are left out)."""
    rows = [(set(f) & set(t[t >= 0]), np.count_nonzero(t >= 0)) for f, t in zip(found, truth, strict=True)]
    return np.array([len(hit) / size for hit, size in rows if size])


def cross_modal_sources(store: EmbeddingStore, modality: str, dim: int) -> dict[str, list[ShardVectors]]:
    """The space's other modalities that have vectors (of the index's dimension), by modality."""
    sources = {m: [s for s in modality_shards(store, m) if len(s)] for m in store.space.modalities() if m != modality}
    return {m: shards for m, shards in sources.items() if shards and shards[0].vectors.shape[1] == dim}


def tuning_queries(indexed: list[ShardVectors], sources: dict[str, np.ndarray]) -> TuningQueries:
    """Query vectors by modality, with their exact nearest among ``indexed`` (what the index holds now)."""
    vectors = np.concatenate([np.asarray(v, np.float32) for v in sources.values()])
    modalities = [m for m, v in sources.items() for _ in range(len(v))]
    return TuningQueries(vectors, modalities, exact_neighbours(indexed, vectors))


def measure(searchable: SearchableIndex, queries: TuningQueries) -> Tuned:
    """Recall@K of the index as it is set, over all queries and per query modality."""
    _, found = searchable.search(queries.vectors, min(K, searchable.ntotal))
    return _summary(found, queries)


def tune(searchable: SearchableIndex, queries: TuningQueries, target: float) -> Tuned:
    """The first setting, knob ascending then re-rank depth, whose recall meets ``target``, applied to
    ``searchable``; else the best one, once raising the knob no longer gains recall. Its recall is then
    measured as searches will run."""
    best: Tuned | None = None
    for trials in _trials(searchable, queries):
        met = next((trial for trial in trials if trial.recall >= target), None)
        if met is not None:
            best = met
            break
        top = max(trials, key=lambda trial: trial.recall)
        if best is not None and top.recall < best.recall + PLATEAU:
            break
        best = top if best is None or top.recall > best.recall else best
    searchable.set(best.parameters, best.rerank)
    measured = measure(searchable, queries)
    best.recall, best.by_query = measured.recall, measured.by_query
    return best


def _trials(searchable: SearchableIndex, queries: TuningQueries) -> Iterator[list[Tuned]]:
    """For each knob value (ascending), a trial per re-rank depth (one with no re-ranking for exact codes):
    one FAISS search at the deepest depth, whose candidate lists' prefixes give the shallower ones."""
    knob = search_knob(searchable.index)
    factors = RERANK_FACTORS if searchable.exact is not None else (0,)
    depth = min(K * max(*factors, 1), searchable.ntotal)
    for parameters in [{knob[0]: value} for value in knob[1]] if knob else [{}]:
        searchable.set(parameters, 0)
        _, candidates = searchable.candidates(queries.vectors, depth)
        if not factors[0]:
            yield [_summary(candidates[:, :K], queries, parameters)]
            continue
        scores = exact_scores(searchable.exact, queries.vectors, candidates)
        yield [_summary(top_k(scores[:, :K * factor], candidates[:, :K * factor], K)[1], queries, parameters, factor)
               for factor in factors]


def _summary(found: np.ndarray, queries: TuningQueries, parameters: dict[str, Any] | None = None,
             rerank: int = 0) -> Tuned:
    per_query = recall(found, queries.truth)
    answerable = [m for m, t in zip(queries.modalities, queries.truth, strict=True) if (t >= 0).any()]
    by_query = {m: round(float(np.mean([r for r, q in zip(per_query, answerable, strict=True) if q == m])), 4)
                for m in dict.fromkeys(answerable)}
    return Tuned(dict(parameters or {}), rerank, float(np.mean(per_query)) if len(per_query) else 1.0, by_query)
