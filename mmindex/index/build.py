"""Building an index: choose its type, train on a sample, add vectors shard by shard, tune (tune.py), save."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from mmindex.dataset import shard_name
from mmindex.index.choose import TRAIN_PER_LIST, choose
from mmindex.index.exclusion import Exclusion
from mmindex.index.searchable import ExactVectors, SearchableIndex, keeps_exact_vectors
from mmindex.index.store import IndexFiles
from mmindex.index.tune import QUERIES, Tuned, cross_modal_sources, tune, tuning_queries
from mmindex.index.vectors import ShardVectors, modality_shards, sample_rows, split_tail, total
from mmindex.sizes import counted

log = logging.getLogger("mmindex")
ADD_BATCH = 65_536
Shards = list[ShardVectors]   # in id order


@dataclass(frozen=True)
class BuildSettings:
    max_memory: int = 4 * 2**30
    target_recall: float = 0.95
    index_type: str | None = None   # a FAISS factory string, overriding the choice
    exclude_duplicates: bool = False   # leave out the non-representatives of `mmindex dedup`'s groups


def add_shards(index: faiss.Index, shards: Shards) -> None:
    for shard in shards:
        for start in range(0, len(shard.keys), ADD_BATCH):
            index.add(np.ascontiguousarray(shard.vectors[start:start + ADD_BATCH], dtype=np.float32))


def build_index(files: IndexFiles, settings: BuildSettings, update: bool = False) -> dict[str, Any]:
    """Builds (or with ``update``, extends) the index of one modality; returns its info."""
    started = time.monotonic()
    store, modality = files.embeddings, files.modality
    embedded = [s for s in modality_shards(store, modality) if s.keys]
    if not embedded:
        raise FileNotFoundError(f"no {modality} vectors in space {store.space.name!r}: run `mmindex embed "
                                f"{store.dataset.root} --model {store.space.name}` first")
    previous = files.read() if update and files.exists() else None
    exclusion = _exclusion(files, settings.exclude_duplicates, previous[0] if previous else None)
    shards = [exclusion.keep(s) for s in embedded] if exclusion else embedded
    n, dim = total(shards), embedded[0].vectors.shape[1]
    if previous:
        index, info, indexed, pending = _reopen(*previous, shards)
    else:
        (index, info), indexed, pending = _trained(shards, n, dim, settings), [], shards
    ordered = indexed + pending  # every shard of the index, in id order
    others = cross_modal_sources(store, modality, dim)
    share = QUERIES // (1 + len(others))
    pending, held_out = split_tail(pending, min(share, total(pending) // 2))
    log.info("index: adding %s vectors of dimension %d (%s more after tuning, held out as its queries)",
             f"{total(pending):,}", dim, f"{total(held_out):,}")
    add_shards(index, pending)
    tuned = _tuned(index, indexed + pending, {modality: held_out, **others}, share, settings.target_recall)
    add_shards(index, held_out)
    info.update(parameters=tuned.parameters, rerank=tuned.rerank, recall_at_10=round(tuned.recall, 4),
                recall_at_10_by_query=tuned.by_query, target_recall=settings.target_recall,
                target_met=tuned.recall >= settings.target_recall, vectors=n, dim=dim, space=store.space.name,
                modality=modality, shards={shard_name(s.number): len(s.keys) for s in ordered},
                build_seconds=round(time.monotonic() - started, 2))
    if exclusion:
        info["excluded"] = exclusion.record({shard_name(e.number): len(e.keys) - len(s.keys)
                                             for e, s in zip(embedded, shards, strict=True)})
    files.save(index, [{"key": key, "shard": shard_name(s.number)} for s in ordered for key in s.keys], info)
    return info


def _trained(shards: Shards, n: int, dim: int, settings: BuildSettings) -> tuple[faiss.Index, dict]:
    """A new, empty index of the chosen (or given) type, trained on a sample of all the vectors."""
    choice = choose(n, dim, settings.max_memory, settings.target_recall)
    factory = settings.index_type or choice.factory
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        reason = str(err).rsplit(": ", 1)[-1]
        raise ValueError(f"--index-type {factory!r}: FAISS cannot build it for {dim}-d vectors ({reason})") from None
    lists = faiss.extract_index_ivf(index).nlist if _is_ivf(index) else 0
    if not index.is_trained:
        sample = sample_rows(shards, max(lists * TRAIN_PER_LIST, 10_000), seed=0)
        log.info("index: training %s on %s vectors", factory, f"{len(sample):,}")
        index.train(sample)
    return index, {"type": factory, "lists": lists, "chosen_by": "--index-type" if settings.index_type else "auto",
                   "bytes_per_vector": None if settings.index_type else choice.bytes_per_vector}


def _exclusion(files: IndexFiles, asked: bool, previous: dict | None) -> Exclusion | None:
    """The near-duplicates to leave out: as asked, or with --update, as the index was built."""
    if previous is not None:
        if asked and not previous.get("excluded"):
            raise ValueError("--update extends the index as it was built, near-duplicates included: rebuild "
                             "without --update to leave them out")
        asked = bool(previous.get("excluded"))
    return Exclusion.read(files.embeddings, files.modality) if asked else None


def _reopen(previous: dict, index: faiss.Index, keys: list[str], shards: Shards
            ) -> tuple[faiss.Index, dict, Shards, Shards]:
    """The saved index, to be extended without retraining, with the shards it holds (in id order) and the new
    ones; the indexed shards, and the near-duplicates left out of them, must be unchanged."""
    by_name = {shard_name(s.number): s for s in shards}
    indexed = previous["shards"]
    if any(name not in by_name for name in indexed) or keys != [k for name in indexed for k in by_name[name].keys]:
        raise ValueError("--update only adds new shards, but indexed shards changed or disappeared (or the "
                         "near-duplicates left out of them did): rebuild without --update")
    new = [s for name, s in by_name.items() if name not in indexed]
    log.info("index: adding %s to the %s index", counted(len(new), "new shard"), previous["type"])
    info = {k: previous[k] for k in ("type", "lists", "chosen_by", "bytes_per_vector")}
    return index, info, [by_name[name] for name in indexed], new


def _tuned(index: faiss.Index, indexed: Shards, queries: dict[str, Shards], share: int,
           target: float) -> Tuned:
    """Tunes ``index``, which holds ``indexed``, on up to ``share`` query vectors of each modality."""
    log.info("index: tuning for recall@10 >= %s on held-out queries (%s)", target,
             ", ".join(f"{m} {min(share, total(shards)):,}" for m, shards in queries.items()))
    exact = None if keeps_exact_vectors(index) else ExactVectors([s.vectors for s in indexed])
    sources = {m: sample_rows(shards, share, seed=1) for m, shards in queries.items() if shards}
    if not sources:  # a single vector, nothing to hold out: every search finds it
        return Tuned()
    return tune(SearchableIndex(index, exact), tuning_queries(indexed, sources), target)


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False
