"""Cross-modal search: a query (text, image, audio, or several fused) against the indexes of a space.

Models and indexes load once per Searcher, so a batch of queries pays for them once. Scores are cosine
similarities in the space's shared vector space, so results from several modalities merge on one scale.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmindex.dataset import MODALITIES, read_samples
from mmindex.embed.store import EmbeddingStore
from mmindex.encoders.base import Encoder
from mmindex.index.searchable import SearchableIndex
from mmindex.index.store import IndexFiles, not_embedded
from mmindex.media import Rejected
from mmindex.spaces import Space

log = logging.getLogger("mmindex")


class BadQuery(ValueError):
    """A query that cannot be run: empty, a missing file, media that cannot be read."""


@dataclass
class Query:
    """One query: any of a text, an image file and an audio file, with a weight each (fused into one vector)."""

    text: str | None = None
    image: str | None = None
    audio: str | None = None
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in MODALITIES:
            if not isinstance(getattr(self, name), str | None):
                raise BadQuery(f"{name} must be a string, not {getattr(self, name)!r}")
        if not isinstance(self.weights, dict):
            raise BadQuery(f"weights must map modalities to numbers, not {self.weights!r}")
        for name, weight in self.weights.items():
            if name not in MODALITIES:
                raise BadQuery(f"weight for {name!r}: a query part is text, image or audio")
            if isinstance(weight, bool) or not isinstance(weight, int | float):
                raise BadQuery(f"weight for {name!r} must be a number, not {weight!r}")

    def parts(self) -> dict[str, str]:
        parts = {m: v for m in MODALITIES if (v := getattr(self, m))}
        if "text" in parts and not parts["text"].strip():
            del parts["text"]
        if not parts:
            raise BadQuery("empty query: give a text, --image PATH or --audio PATH")
        return parts


class Searcher:
    def __init__(self, root: str, space: Space, targets: list[str] | None = None, device: str = "cpu"):
        self.store = EmbeddingStore.of(root, space)
        self.device = device
        self._encoders: dict[str, Encoder] = {}
        self._indexes: dict[str, tuple[SearchableIndex, list[str], list[str]]] = {}
        self.targets = targets or [m for m in MODALITIES if IndexFiles(self.store, m).exists()]
        if not self.targets:
            IndexFiles(self.store, "text").info()  # raises IndexMissing with the command to run
        for modality in self.targets:
            files = IndexFiles(self.store, modality)
            files.check()
            self._indexes[modality] = files.load()

    def not_embedded(self) -> str | None:
        """What to run when ingested shards have no embeddings yet (no index can find their samples)."""
        return not_embedded(self.store)

    def encoder(self, modality: str) -> Encoder:
        if modality not in self._encoders:
            space = self.store.space
            if modality not in space.modalities():
                raise BadQuery(f"space {space.name!r} cannot embed {modality} queries "
                               f"(it embeds {', '.join(space.modalities())})")
            self._encoders[modality] = space.query_encoder(modality, self.device)
        return self._encoders[modality]

    def embed(self, query: Query) -> np.ndarray:
        """The query's unit vector: its parts embedded and averaged with their weights."""
        total = None
        for modality, value in query.parts().items():
            encoder = self.encoder(modality)
            if modality == "text":
                payload = value.encode()
            else:
                path = Path(value)
                if not path.is_file():
                    raise BadQuery(f"--{modality} {value}: " + ("a folder, not a file: give one " + modality + " file"
                                                               if path.is_dir() else "no such file"))
                payload = path.read_bytes()
            try:
                result = encoder.encode([encoder.preparer()(payload)])
            except Rejected as err:
                raise BadQuery(f"--{modality} {value}: {err.reason}: {err.detail}") from None
            if result.skipped[0]:
                raise BadQuery(f"--{modality} {value}: {result.skipped[0]}")
            part = query.weights.get(modality, 1.0) * np.asarray(result.vectors[0], np.float32)
            total = part if total is None else total + part
        norm = np.linalg.norm(total)
        if not norm:
            raise BadQuery("the weighted query parts cancel out: check --weight")
        return total / norm

    def search(self, query: Query, k: int = 10) -> list[dict[str, Any]]:
        vector = self.embed(query)[None, :]
        hits = []
        for modality, (index, keys, shards) in self._indexes.items():
            scores, ids = index.search(vector, min(k, index.ntotal))
            hits += [{"score": float(s), "modality": modality, "key": keys[i], "shard": shards[i]}
                     for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
        hits.sort(key=lambda h: -h["score"])
        hits = hits[:k]
        self._describe(hits)
        return [{"rank": rank, **hit} for rank, hit in enumerate(hits, 1)]

    def _describe(self, hits: list[dict[str, Any]]) -> None:
        """Adds each hit's caption and source from the samples parquet of its shard."""
        dataset = self.store.dataset
        for shard in sorted({h["shard"] for h in hits}):
            table = read_samples(dataset.samples_path(int(shard)), columns=["key", "caption", "source"])
            rows = {r["key"]: r for r in table.to_pylist()}
            for hit in hits:
                if hit["shard"] == shard:
                    row = rows.get(hit["key"], {})
                    hit["caption"], hit["source"] = row.get("caption"), row.get("source")


def parse_weights(items: list[str]) -> dict[str, float]:
    """``--weight image=0.3`` options as a weight per query part."""
    weights = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise BadQuery(f"--weight {item!r}: give MODALITY=NUMBER, e.g. image=0.5") from None
        if name not in MODALITIES:
            raise BadQuery(f"--weight {item!r}: the modality is text, image or audio")
    return weights


def read_queries(path: Path, weights: dict[str, float]) -> list[Query]:
    """The queries of a --queries file; a malformed line refuses the file, naming the line."""
    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            if not line.lstrip().startswith("{"):
                queries.append(Query(text=line.strip(), weights=weights))
                continue
            fields = json.loads(line)
            unknown = set(fields) - {*MODALITIES, "weights"}
            if unknown:
                raise BadQuery(f"unknown field(s) {sorted(unknown)}; use text, image, audio, weights")
            own_weights = fields.get("weights", {})
            if not isinstance(own_weights, dict):
                raise BadQuery(f"weights must map modalities to numbers, not {own_weights!r}")
            queries.append(Query(fields.get("text"), fields.get("image"), fields.get("audio"),
                                 {**weights, **own_weights}))
        except ValueError as err:  # BadQuery, or JSON that does not parse
            raise BadQuery(f"{path}:{number}: {err}") from None
    return queries


def search_batch(searcher: Searcher, batch: list[Query], k: int) -> Iterator[dict[str, Any]]:
    """One line per query, in order: its results, or the error that stopped it (the batch goes on)."""
    for one in batch:
        line: dict[str, Any] = {"query": {"text": one.text, "image": one.image, "audio": one.audio}}
        try:
            line["results"] = searcher.search(one, k)
        except BadQuery as err:
            line["error"] = str(err)
        yield line
