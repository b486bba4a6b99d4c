"""Retrieval quality of a dataset's own pairs: caption -> image, image -> caption, caption -> audio, ...

For each ordered pair of modalities, every sample with both is a query (its vector of the first modality);
the correct answers are the second modality's items of all samples that share its caption (so duplicates
of a caption count as correct). Ranks come from exact search over all vectors, and from the built index (one
built without near-duplicates holds a group's representative for its copies, and finding it counts as finding
them).

In a bridge space, only the held-out samples (a fixed 20% of keys, whose captions the mapping never learned
from) are queries, and pairs with a modality that came through the bridge are marked as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations
from typing import Any

import numpy as np

from mmindex.bridge.learn import held_out
from mmindex.dataset.duplicates import DuplicateStore
from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.dataset.samples import captions
from mmindex.index.searchable import SearchableIndex
from mmindex.index.store import IndexFiles
from mmindex.index.vectors import modality_shards
from mmindex.modalities import MODALITIES

KS = (1, 5, 10)
INDEX_DEPTH = 100   # how deep the built index is searched for the first correct answer


@dataclass
class Items:
    keys: list[str]
    vectors: np.ndarray


def load_items(store: EmbeddingStore, modality: str) -> Items:
    keys, parts = [], []
    for shard in modality_shards(store, modality):
        keys += shard.keys
        if len(shard.vectors):  # a shard whose items of the modality were all skipped has none, of no width
            parts.append(np.asarray(shard.vectors, np.float32))
    return Items(keys, np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))


def lowered_captions(store: EmbeddingStore) -> dict[str, str]:
    return {key: caption.lower() for key, caption in captions(store.dataset).items()}


def first_correct(ranked: np.ndarray, correct: set[int]) -> float:
    """1-based rank of the first correct id in ``ranked``, or inf if none is there."""
    for position, item in enumerate(ranked, 1):
        if int(item) in correct:
            return float(position)
    return float("inf")


def summarise(ranks: list[float]) -> dict[str, Any]:
    ranks_array = np.asarray(ranks)
    out: dict[str, Any] = {f"recall@{k}": round(float(np.mean(ranks_array <= k)), 4) for k in KS}
    median = float(np.median(ranks_array))
    out["median_rank"] = median if np.isfinite(median) else None
    out["queries"] = len(ranks)
    return out


def evaluate(store: EmbeddingStore, with_index: bool = True) -> list[dict[str, Any]]:
    """One row per (query modality, target modality) pair the data has, exact and (if built) indexed."""
    text_of = lowered_captions(store)
    items = {m: load_items(store, m) for m in MODALITIES}
    bridged = _bridged_modalities(store)
    rows: list[dict[str, Any]] = []
    built: dict[str, SearchableIndex | None] = {}
    for source, target in permutations(items, 2):
        queries, targets = items[source], items[target]
        by_caption: dict[str, set[int]] = {}
        for i, key in enumerate(targets.keys):
            if key in text_of:
                by_caption.setdefault(text_of[key], set()).add(i)
        asked = [(i, by_caption[text_of[key]]) for i, key in enumerate(queries.keys)
                 if key in text_of and text_of[key] in by_caption and (bridged is None or held_out(key))]
        if not asked:
            continue
        query_vectors = queries.vectors[[i for i, _ in asked]]
        exact = np.argsort(-(query_vectors @ targets.vectors.T), axis=1, kind="stable")
        row = {"query": "caption" if source == "text" else source, "target": "caption" if target == "text" else target,
               "exact": summarise([first_correct(r, c) for r, (_, c) in zip(exact, asked, strict=True)])}
        if bridged is not None:
            row["queries_from"] = "held-out keys"
            row["through_bridge"] = source in bridged or target in bridged
        if target not in built:
            built[target] = BuiltTarget.read(store, target, targets.keys) if with_index else None
        indexed = built[target]
        if indexed is not None:
            _, found = indexed.index.search(query_vectors, min(INDEX_DEPTH, indexed.index.ntotal))
            row["index"] = summarise([first_correct(indexed.positions_of(r), indexed.correct(c))
                                      for r, (_, c) in zip(found, asked, strict=True)])
            row["index_type"] = indexed.kind
        rows.append(row)
    return rows


def _bridged_modalities(store: EmbeddingStore) -> set[str] | None:
    """The modalities a bridge space maps in from its bridged space; None for other spaces."""
    if store.space.settings["kind"] != "bridge":
        return None
    base, bridged = store.space.joined()
    return set(bridged.modalities()) - set(base.modalities())


@dataclass(frozen=True)
class BuiltTarget:
    """A modality's built index as eval reads it: the position among the modality's items of each of its ids (an
    index numbers only what it holds), and, for an index without near-duplicates, the representative that stands
    for each copy it leaves out, as search shows it in their place."""

    index: SearchableIndex
    kind: str                        # its type, as its info records it
    positions: np.ndarray            # by id
    representative: dict[int, int]  # a left-out copy's position -> its representative's

    @classmethod
    def read(cls, store: EmbeddingStore, modality: str, keys: list[str]) -> BuiltTarget | None:
        """The modality's published index, refused if stale; None if none is built."""
        files = IndexFiles(store, modality)
        if not files.exists():
            return None
        loaded = files.load_published(check=True)
        position = {key: i for i, key in enumerate(keys)}
        groups = DuplicateStore(store.dataset, store.space.name).groups() if loaded.info.get("excluded") else []
        return cls(loaded.index, loaded.info["type"],
                   np.fromiter((position[key] for key in loaded.keys), np.int64, len(loaded.keys)),
                   {position[row["key"]]: position[row["representative"]] for row in groups
                    if row["modality"] == modality and row["key"] in position})

    def positions_of(self, ids: np.ndarray) -> np.ndarray:
        """Items' positions of the ids a search found (-1 stays -1)."""
        return np.where(ids >= 0, self.positions[ids], -1)

    def correct(self, positions: set[int]) -> set[int]:
        """The correct answers with the representatives that stand for them."""
        return positions | {self.representative[i] for i in positions if i in self.representative}
