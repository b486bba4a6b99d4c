"""Building an index: choose its type, train on a sample, add vectors shard by shard, tune, measure, save."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from mmindex import storage
from mmindex.dataset import parquet_bytes, shard_name
from mmindex.index.choose import TRAIN_PER_LIST, choose
from mmindex.index.store import KEYS_SCHEMA, IndexFiles, apply_parameters
from mmindex.index.vectors import ShardVectors, modality_shards, sample_rows

log = logging.getLogger("mmindex")
HELD_OUT = 1_000
ADD_BATCH = 65_536
EXACT_BLOCK = 8_192   # vectors scored per step of the exact search (bounds its memory: queries x block)


@dataclass(frozen=True)
class IndexSettings:
    max_memory: int = 4 * 2**30
    target_recall: float = 0.95
    index_type: str | None = None   # a FAISS factory string, overriding the choice


def recall_at_10(index: faiss.Index, queries: np.ndarray, truth: np.ndarray) -> float:
    _, found = index.search(queries, 10)
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def exact_neighbours(shards: list[ShardVectors], queries: np.ndarray, k: int = 10) -> np.ndarray:
    """Ground truth: ids of the k best inner products, over every vector, shard by shard."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.full((len(queries), k), -1, np.int64)
    offset = 0
    for shard in shards:
        for start in range(0, len(shard.keys), EXACT_BLOCK):
            block = np.asarray(shard.vectors[start:start + EXACT_BLOCK], np.float32)
            scores = queries @ block.T
            ids = np.broadcast_to(np.arange(offset + start, offset + start + len(block)), scores.shape)
            both_scores = np.concatenate([best_scores, scores], axis=1)
            both_ids = np.concatenate([best_ids, ids], axis=1)
            top = np.argpartition(-both_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(both_scores, top, axis=1)
            best_ids = np.take_along_axis(both_ids, top, axis=1)
        offset += len(shard.keys)
    return best_ids


def tune(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, target: float,
         lists: int) -> tuple[dict[str, Any], float]:
    """The smallest nprobe (powers of two) whose recall@10 meets the target, and that recall."""
    if not lists:
        return {}, recall_at_10(index, queries, truth)
    nprobe, recall = 1, 0.0
    while True:
        apply_parameters(index, {"nprobe": nprobe})
        recall = recall_at_10(index, queries, truth)
        if recall >= target or nprobe >= lists:
            return {"nprobe": nprobe}, recall
        nprobe = min(nprobe * 2, lists)


def add_shards(index: faiss.Index, shards: list[ShardVectors]) -> None:
    for shard in shards:
        for start in range(0, len(shard.keys), ADD_BATCH):
            index.add(np.ascontiguousarray(shard.vectors[start:start + ADD_BATCH], dtype=np.float32))


def build_index(files: IndexFiles, settings: IndexSettings, update: bool = False) -> dict[str, Any]:
    """Builds (or with ``update``, extends) the index of one modality; returns its info."""
    started = time.monotonic()
    store, modality = files.embeddings, files.modality
    shards = [s for s in modality_shards(store, modality) if s.keys]
    if not shards:
        raise FileNotFoundError(f"no {modality} vectors in space {store.space.name!r}: run `mmindex embed "
                                f"{store.dataset.root} --model {store.space.name}` first")
    n, dim = sum(len(s.keys) for s in shards), shards[0].vectors.shape[1]
    previous = files.info() if update and files.exists() else None
    if previous is not None:
        index, info, shards = _extend(files, previous, shards)
    else:
        index, info = _train(shards, n, dim, settings)
    queries = sample_rows(shards, HELD_OUT, seed=1)
    truth = exact_neighbours(shards, queries)
    parameters, recall = tune(index, queries, truth, settings.target_recall, info["lists"])
    info.update(parameters=parameters, recall_at_10=round(recall, 4), target_recall=settings.target_recall,
                vectors=n, dim=dim, space=store.space.name, modality=modality,
                shards={shard_name(s.number): len(s.keys) for s in shards},
                build_seconds=round(time.monotonic() - started, 2))
    _save(files, index, shards, info)
    return info


def _train(shards: list[ShardVectors], n: int, dim: int, settings: IndexSettings) -> tuple[faiss.Index, dict]:
    choice = choose(n, dim, settings.max_memory, settings.target_recall)
    factory = settings.index_type or choice.factory
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    lists = faiss.extract_index_ivf(index).nlist if _is_ivf(index) else 0
    if not index.is_trained:
        sample = sample_rows(shards, max(lists * TRAIN_PER_LIST, 10_000), seed=0)
        log.info("index: training %s on %s vectors", factory, f"{len(sample):,}")
        index.train(sample)
    log.info("index: adding %s vectors of dimension %d", f"{n:,}", dim)
    add_shards(index, shards)
    return index, {"type": factory, "lists": lists, "chosen_by": "--index-type" if settings.index_type else "auto",
                   "bytes_per_vector": choice.bytes_per_vector}


def _extend(files: IndexFiles, previous: dict,
            shards: list[ShardVectors]) -> tuple[faiss.Index, dict, list[ShardVectors]]:
    """Adds the shards the index does not hold yet, without retraining; the indexed ones must be unchanged.
    Returns the shards in id order: the indexed ones as they were added, then the new ones."""
    by_name = {shard_name(s.number): s for s in shards}
    indexed = previous["shards"]
    if any(name not in by_name or len(by_name[name].keys) != count for name, count in indexed.items()):
        raise ValueError("--update only adds new shards, but indexed shards changed or disappeared: rebuild "
                         "without --update")
    index = faiss.read_index(files.path("index.faiss"))
    new = [s for name, s in by_name.items() if name not in indexed]
    log.info("index: adding %d new shard(s) to the %s index", len(new), previous["type"])
    add_shards(index, new)
    info = {k: previous[k] for k in ("type", "lists", "chosen_by", "bytes_per_vector")}
    return index, info, [by_name[name] for name in indexed] + new


def _is_ivf(index: faiss.Index) -> bool:
    try:
        faiss.extract_index_ivf(index)
        return True
    except RuntimeError:
        return False


def _save(files: IndexFiles, index: faiss.Index, shards: list[ShardVectors], info: dict) -> None:
    path = files.path("index.faiss")
    if storage.is_local(path):  # straight to disk: a serialized copy would double the memory of a large index
        temp = storage.temp_name(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        faiss.write_index(index, temp)
        os.replace(temp, path)
    else:
        storage.write_atomic(path, faiss.serialize_index(index).tobytes())
    info["bytes"] = storage.size(path)
    rows = [{"key": key, "shard": shard_name(s.number)} for s in shards for key in s.keys]
    storage.write_atomic(files.path("keys.parquet"), parquet_bytes(rows, KEYS_SCHEMA))
    storage.write_atomic(files.path("info.json"), json.dumps(info, indent=2).encode())
