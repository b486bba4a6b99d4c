"""Finishing an index: its parts merged (or, for types that cannot be merged, its vectors added whole), tuned on
held-out queries (tune.py), and written as a new generation whose keys are streamed shard by shard.

The held-out queries are the last vectors the build adds. An index built from parts already holds them, so
tuning's searches leave their ids out (an IVF index scores every vector alone, so this is the index without
them); a whole index gets them only after tuning, since in a graph they would also lead the search to their
neighbours.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import faiss
import pyarrow as pa

from mmindex.dataset import shard_name
from mmindex.dataset.indexes import LISTS, GenerationWriter, writing_generation
from mmindex.index.built import BuiltIndex
from mmindex.index.exclusion import Exclusion
from mmindex.index.parts import PartAdded, Trained, add, merge, remove_work
from mmindex.index.plan import IndexPlan, lists_on_disk
from mmindex.index.searchable import ExactVectors, SearchableIndex, keeps_exact_vectors
from mmindex.index.store import read_index
from mmindex.index.tune import QUERIES, Tuned, cross_modal_sources, tune, tuning_queries
from mmindex.index.vectors import ShardVectors, sample_rows, split_tail, total

log = logging.getLogger("mmindex")
Shards = list[ShardVectors]   # in id order


def finish(root: str, elements: list[Trained | PartAdded]) -> list[BuiltIndex]:
    """The Finish step of one index (``root``): its trained index and parts in, its new generation out."""
    trained = next(e for e in elements if isinstance(e, Trained))
    plan, files = trained.plan, trained.plan.files
    parts = [e for e in elements if isinstance(e, PartAdded)]
    if plan.parts and len(parts) != len(plan.added):
        raise RuntimeError(f"the {files.modality} index got {len(parts)} of its {len(plan.added)} parts: run the "
                           f"same command again")
    others = cross_modal_sources(files.embeddings, files.modality, plan.dim)
    share = QUERIES // (1 + len(others))  # the index's own modality's share of the queries
    shards = [plan.shard_vectors(span) for span in plan.shards]
    added, held_out = split_tail(shards[plan.new:], min(share, total(shards[plan.new:]) // 2))
    queries = {files.modality: held_out, **others}
    with writing_generation(files.embeddings.dataset.root, root) as new:
        if plan.parts:
            index = merge(plan, trained, parts, new.generation)
            hidden = range(plan.vectors - total(held_out), plan.vectors)
            tuned = _tuned(plan, SearchableIndex(index, hidden=hidden), shards, queries, share)
        else:
            index = read_index(trained.path)
            for shard in added:
                add(index, shard.vectors, 0)
            tuned = _tuned(plan, SearchableIndex(index), shards, queries, share)
            for shard in held_out:
                add(index, shard.vectors, 0)
        info = _info(plan, tuned, time.time() - plan.started_at)
        _write(new, plan, index, info)
    remove_work(plan)
    return [BuiltIndex.of(files, info)]


def _tuned(plan: IndexPlan, searchable: SearchableIndex, shards: Shards, queries: dict[str, Shards],
           share: int) -> Tuned:
    """Tunes the index, which holds (or shows) ``shards`` but the held-out ones, on up to ``share`` query vectors
    of each modality."""
    target = plan.settings.target_recall
    log.info("index: tuning for recall@10 >= %s on held-out queries (%s)", target,
             ", ".join(f"{m} {min(share, total(q)):,}" for m, q in queries.items()))
    if not keeps_exact_vectors(searchable.index):
        searchable.exact = ExactVectors([s.vectors for s in shards])
    sources = {m: sample_rows(q, share, seed=1) for m, q in queries.items() if q}
    if not sources:  # a single vector, nothing to hold out: every search finds it
        return Tuned()
    indexed, _ = split_tail(shards, total(queries[plan.files.modality]))
    return tune(searchable, tuning_queries(indexed, sources), target)


def _info(plan: IndexPlan, tuned: Tuned, seconds: float) -> dict[str, Any]:
    info = {**plan.chosen, "parameters": tuned.parameters, "rerank": tuned.rerank,
            "recall_at_10": round(tuned.recall, 4), "recall_at_10_by_query": tuned.by_query,
            "target_recall": plan.settings.target_recall, "target_met": tuned.recall >= plan.settings.target_recall,
            "vectors": plan.vectors, "dim": plan.dim, "space": plan.files.embeddings.space.name,
            "modality": plan.files.modality, "shards": {s.name: s.vectors for s in plan.shards},
            "parts": len(plan.added) if plan.parts else 0, "build_seconds": round(seconds, 2)}
    if plan.exclusion is not None:
        exclusion = Exclusion.of(plan.files.duplicates, plan.files.modality)
        embedded = plan.files.embeddings.vector_counts(plan.files.modality)
        info["excluded"] = exclusion.record({s.name: embedded[s.name] - s.vectors for s in plan.shards})
    return info


def _write(new: GenerationWriter, plan: IndexPlan, index: faiss.Index, info: dict[str, Any]) -> None:
    """The generation's files: the lists (already on disk), the index, the keys shard by shard, then the info."""
    if plan.parts and lists_on_disk(new.generation.folder):
        new.record(LISTS)
    new.write_index(lambda out: faiss.write_index(index, faiss.PyCallbackIOWriter(out.write)))
    new.write_keys(_keys(plan))
    new.commit(info)


def _keys(plan: IndexPlan) -> Iterator[pa.Table]:
    for span in plan.shards:
        keys = plan.shard(span).keys
        yield pa.table({"key": keys, "shard": [shard_name(span.number)] * len(keys)})
