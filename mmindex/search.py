"""Cross-modal search: a query (text, image, audio, or several fused) against the indexes of a space.

Models and indexes load once per Searcher, so a batch of queries pays for them once. Scores are cosine
similarities in the space's shared vector space, so results from several modalities merge on one scale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmindex.dataset.duplicates import DuplicateStore
from mmindex.dataset.embeddings import EmbeddingStore, Skipped
from mmindex.dataset.indexes import Generation, PointerDamaged, published
from mmindex.dataset.samples import read_samples, shown
from mmindex.dedup.pairs import first_of_each
from mmindex.encoders.base import Encoder
from mmindex.index.store import IndexFiles, IndexMissing, LoadedIndex, not_embedded
from mmindex.media import Rejected
from mmindex.modalities import MEDIA, MODALITIES
from mmindex.spaces import Space

log = logging.getLogger("mmindex")
DEDUP_THRESHOLD = 0.94   # clip-retrieval's: hits this alike in the search space are one result


class BadQuery(ValueError):
    """A query that cannot be run: empty, a missing file, media that cannot be read."""


class DimensionMismatch(BadQuery):
    """A query vector of another length than the space's: every vector of its batch is, so the batch stops."""


class EmptyQuery(BadQuery):
    """A query with nothing to search with. Each interface says in its own terms how to give a part (the CLI
    its options, HTTP its fields); this message names none of them."""


@dataclass
class Query:
    """One query: any of a text, an image and an audio clip, with a weight each (fused into one vector). An
    image or clip is a file's path (the CLI) or its bytes (an upload to the server). Or a vector of the space
    alone (a row of a .npy file, a list of numbers from a client), checked against the index it searches."""

    text: str | None = None
    image: str | bytes | None = None
    audio: str | bytes | None = None
    weights: dict[str, float] = field(default_factory=dict)
    vector: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str | None):
            raise BadQuery(f"text must be a string, not {self.text!r}")
        for name in MEDIA:
            if not isinstance(getattr(self, name), str | bytes | None):
                raise BadQuery(f"{name} must be a file's path or bytes, not {getattr(self, name)!r}")
        if not isinstance(self.weights, dict):
            raise BadQuery(f"weights must map modalities to numbers, not {self.weights!r}")
        for name, weight in self.weights.items():
            if name not in MODALITIES:
                raise BadQuery(f"weight for {name!r}: a query part is text, image or audio")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
                raise BadQuery(f"weight for {name!r} must be a finite number, not {weight!r}")

    def parts(self) -> dict[str, Any]:
        parts = {m: v for m in MODALITIES if (v := getattr(self, m))}
        if "text" in parts and not parts["text"].strip():
            del parts["text"]
        if self.vector is not None:
            if parts:
                raise BadQuery("a query by vector takes no text, image or audio beside it")
            return {"vector": self.vector}
        if not parts:
            raise EmptyQuery("empty query: give a text, an image or an audio clip")
        return parts


class Searcher:
    def __init__(self, root: str, space: Space, targets: list[str] | None = None, device: str = "cpu"):
        self.store = EmbeddingStore.of(root, space)
        self.device = device
        self._encoders: dict[str, Encoder] = {}
        self._reloading = threading.Lock()
        self._encoding = {m: threading.Lock() for m in MODALITIES}  # a model runs one query at a time
        self.damaged: dict[str, str] = {}  # modality -> what is wrong with its index (a damaged CURRENT)
        published = [m for m in targets or MODALITIES if self._published(m) is not None]
        self.targets = targets or published
        self.skipped = self._wholly_skipped([m for m in targets or space.modalities()
                                             if m not in published and m not in self.damaged])
        for modality in self.targets:
            if modality in self.skipped:  # indexing again cannot help: say what can
                raise IndexMissing(self.skipped[modality].advice())
            if modality not in published and modality not in self.damaged:
                self._check_embeds(space, modality)
        if not self.targets and not self.damaged:
            if self.skipped:
                raise IndexMissing("; and ".join(s.advice() for s in self.skipped.values()))
            IndexFiles(self.store, "text").info()  # raises IndexMissing with the command to run
        self.indexes: dict[str, LoadedIndex] = {m: self._load(m) for m in self.targets}
        self.duplicates = DuplicateStore(self.store.dataset, space.name)
        self._groups: tuple[str | None, dict[str, dict[str, int]]] = (None, {})

    @staticmethod
    def _check_embeds(space: Space, modality: str) -> None:
        """Refuses a modality the space has no encoder for: no index of it can ever be built there, so the advice
        to build one would go in a circle."""
        embeds = space.modalities()
        if modality not in embeds:
            raise IndexMissing(f"space {space.name!r} embeds {' and '.join(embeds)}, not {modality}: no {modality} "
                               f"index can be built in it; embed the dataset in a space that embeds {modality} "
                               f"(the spaces and what each embeds: docs/cli.md, 'Model spaces')")

    def _published(self, modality: str) -> Generation | None:
        """The published build of ``modality``'s index, if it has one to load; a damaged one is noted in
        ``damaged`` (and not followed), so the other modalities keep serving."""
        try:
            found = published(IndexFiles(self.store, modality).root)
        except PointerDamaged as err:
            if self.damaged.get(modality) != str(err):
                log.warning("search: the %s index cannot be used: %s", modality, err)
            self.damaged[modality] = str(err)
            return None
        self.damaged.pop(modality, None)
        return found

    def _wholly_skipped(self, unindexed: list[str]) -> dict[str, Skipped]:
        """Of the modalities without an index, those the space skipped every item of (read only when some are)."""
        if not unindexed:
            return {}
        return {s.modality: s for s in self.store.wholly_skipped() if s.modality in unindexed}

    def _load(self, modality: str) -> LoadedIndex:
        return IndexFiles(self.store, modality).load_published(check=True)  # checked and loaded: one generation

    def refresh(self) -> list[str]:
        """Loads every index whose published generation changed since it was loaded (a rebuild or --update) and
        returns those modalities. Searches under way keep the build they started with; none waits for this.
        A new build that cannot be used (stale, damaged) is logged and the one loaded before kept."""
        if not self._reloading.acquire(blocking=False):
            return []  # another thread is loading it
        try:
            changed = {m: loaded for m, loaded in self.indexes.items()
                       if (now := self._published(m)) is not None and now != loaded.generation}
            fresh = dict(self.indexes)
            for modality in [m for m in list(self.damaged) if m not in fresh and self._published(m) is not None]:
                try:  # its CURRENT was repaired
                    fresh[modality] = self._load(modality)
                except (OSError, RuntimeError, ValueError) as err:
                    self.damaged[modality] = str(err)
            for modality, loaded in changed.items():
                try:
                    fresh[modality] = self._load(modality)
                except (OSError, RuntimeError, ValueError) as err:
                    log.warning("search: keeping the %s index loaded before: the new build cannot be used: %s",
                                modality, err)
                    generation = published(IndexFiles(self.store, modality).root)  # not tried again until the next
                    fresh[modality] = dataclasses.replace(loaded, generation=generation)
            loaded_now = sorted({*changed, *(set(fresh) - set(self.indexes))})
            self.indexes = fresh  # one assignment: a search sees the old set or the new one, never a mix
            return loaded_now
        finally:
            self._reloading.release()

    def not_embedded(self) -> str | None:
        """What to run when ingested shards have no embeddings yet (no index can find their samples)."""
        return not_embedded(self.store)

    def encoder(self, modality: str) -> Encoder:
        if modality not in self._encoders:
            space = self.store.space
            if modality not in space.modalities():
                raise BadQuery(f"space {space.name!r} cannot embed {modality} queries "
                               f"(it embeds {', '.join(space.modalities())})")
            encoder = space.query_encoder(modality, self.device)
            if encoder is None:
                raise BadQuery(f"space {space.name!r} has no {modality} encoder (its vectors were imported): "
                               f"query it by vector")
            self._encoders[modality] = encoder
        return self._encoders[modality]

    def warm(self) -> None:
        """Loads every query encoder of the space now rather than at its first query (a server's start)."""
        self._encoders.update(self.store.space.query_encoders(self.device))

    def embed(self, query: Query) -> np.ndarray:
        """The query's unit vector: its parts embedded and averaged with their weights, or its own vector."""
        total = None
        parts = query.parts()
        if "vector" in parts:
            return self.unit_vector(parts["vector"])
        for modality, value in parts.items():
            label, payload = _payload(modality, value)
            try:
                with self._encoding[modality]:
                    encoder = self.encoder(modality)
                turn = contextlib.nullcontext() if getattr(encoder, "locks_itself", False) else self._encoding[modality]
                with turn:
                    result = encoder.encode([encoder.preparer()(payload)])
            except Rejected as err:
                raise BadQuery(f"{label}: {err.reason}: {err.detail}") from None
            if result.skipped[0]:
                raise BadQuery(f"{label}: {result.skipped[0]}")
            part = query.weights.get(modality, 1.0) * np.asarray(result.vectors[0], np.float32)
            total = part if total is None else total + part
        norm = np.linalg.norm(total)
        if not norm:
            raise BadQuery("the weighted query parts cancel out: check their weights")
        return total / norm

    def unit_vector(self, values: Any) -> np.ndarray:
        """A query's own vector, checked (numbers, finite, not zero, of the indexes' dimension) and normalised."""
        if not self.indexes:
            raise BadQuery("; ".join(self.damaged.values()) or "no index is loaded")
        dim = next(iter(self.indexes.values())).index.index.d
        if not isinstance(values, list | np.ndarray) or (isinstance(values, list) and not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values)):
            raise BadQuery(f"a query vector must be a list of {dim} numbers (the space's dimension)")
        vector = np.asarray(values, np.float32)
        if vector.shape != (dim,):
            raise DimensionMismatch(f"the query vector has {'x'.join(map(str, vector.shape))} dimensions, but space "
                                    f"{self.store.space.name!r} holds {dim}-d vectors: give a list of {dim} numbers")
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(vector).all() or not norm:
            raise BadQuery("a query vector must be finite and not zero")
        return vector / norm

    def search(self, query: Query, k: int = 10, modality: str | None = None, describe: bool = True,
               dedup: float | None = None) -> list[dict[str, Any]]:
        """The k best hits for ``query``, of every indexed modality or only ``modality``."""
        return self.search_vector(self.embed(query), k, modality, describe, dedup)

    def search_vector(self, vector: np.ndarray, k: int = 10, modality: str | None = None, describe: bool = True,
                      dedup: float | None = None) -> list[dict[str, Any]]:
        """The k best hits for a unit vector of the space (every search ends here); ``describe`` adds each
        hit's caption and source from the samples parquet (a server that holds them in memory says no). With
        ``dedup``, no two hits are copies (see ``distinct``); more are fetched until k remain or none are left."""
        indexes = self.indexes  # one build per modality for the whole search, even if a refresh swaps them
        if modality is not None and modality not in indexes:
            skipped = self.skipped.get(modality)
            raise BadQuery(self.damaged.get(modality) or (str(skipped) if skipped else None)
                           or f"no {modality} index is loaded (indexed: {', '.join(indexes)})")
        if not indexes:  # every index of the space is damaged
            raise BadQuery("; ".join(self.damaged.values()) or "no index is loaded")
        searched = {name: loaded for name, loaded in indexes.items() if modality is None or name == modality}
        fetch = k if dedup is None else 4 * k
        groups = self.groups() if dedup is not None else {}
        while True:
            hits = []
            for name, loaded in searched.items():
                scores, ids = loaded.index.search(vector[None, :], min(fetch, loaded.index.ntotal))
                scores = np.clip(scores, -1.0, 1.0)  # a cosine: float16 vectors' rounding can pass 1 (1.000006)
                hits += [{"score": float(s), "modality": name, "key": loaded.keys[i], "shard": loaded.shards[i],
                          "id": int(i)} for s, i in zip(scores[0], ids[0], strict=True) if i >= 0]
            hits.sort(key=lambda h: -h["score"])
            if dedup is not None:
                hits = self.distinct(searched, hits, dedup, groups)
            if len(hits) >= k or all(fetch >= loaded.index.ntotal for loaded in searched.values()):
                break
            fetch *= 4
        hits = [{key: value for key, value in hit.items() if key != "id"} for hit in hits[:k]]
        if describe:
            self._describe(hits)
        return [{"rank": rank, **hit} for rank, hit in enumerate(hits, 1)]

    def distinct(self, indexes: dict[str, LoadedIndex], hits: list[dict[str, Any]], threshold: float,
                 groups: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
        """``hits`` (ranked) without copies of a better one: for a modality that `mmindex dedup` grouped (in
        ``groups``), hits of one group are copies; otherwise, hits whose vectors are at least ``threshold`` alike
        (clip-retrieval's range check), joined into connected components. The first of each stays."""
        kept: list[dict[str, Any]] = []
        for name, loaded in indexes.items():
            mine = [hit for hit in hits if hit["modality"] == name]
            if name in groups:
                seen: set[int] = set()
                for hit in mine:
                    group = groups[name].get(hit["key"])
                    if group is None or group not in seen:
                        kept.append(hit)
                        seen.add(group)
            else:
                exact = IndexFiles(self.store, name).exact(loaded)
                kept += [mine[i] for i in first_of_each(exact.take(np.array([h["id"] for h in mine], np.int64)),
                                                        threshold)]
        return sorted(kept, key=lambda h: -h["score"])

    def groups(self) -> dict[str, dict[str, int]]:
        """The dataset's near-duplicate groups in this space by modality (key -> group), read again when a
        `mmindex dedup` run changed them."""
        version = self.duplicates.groups_version()
        if version != self._groups[0]:
            found: dict[str, dict[str, int]] = {modality: {} for modality in self.duplicates.summary()}
            for row in self.duplicates.groups():
                found.setdefault(row["modality"], {})[row["key"]] = row["group"]
            self._groups = (version, found)
        return self._groups[1]

    def _describe(self, hits: list[dict[str, Any]]) -> None:
        """Adds each hit's caption, name and source from the samples parquet of its shard."""
        dataset = self.store.dataset
        for shard in sorted({h["shard"] for h in hits}):
            wanted = sorted({h["key"] for h in hits if h["shard"] == shard})
            table = read_samples(dataset.samples_path(int(shard)), ["key", "caption", "source"], keys=wanted)
            rows = {r["key"]: r for r in table.to_pylist()}
            for hit in hits:
                if hit["shard"] == shard:
                    row = rows.get(hit["key"], {})
                    hit.update(shown(row.get("caption"), row.get("source")), source=row.get("source"))


def _payload(modality: str, value: str | bytes) -> tuple[str, bytes]:
    """How errors name a query part, and its bytes: a text, an uploaded file's bytes, or a file read from a path."""
    if modality == "text":
        return "text", str(value).encode()
    if isinstance(value, bytes):
        return f"the {modality}", value
    path = Path(value)
    if not path.is_file():
        raise BadQuery(f"--{modality} {value}: " + ("a folder, not a file: give one " + modality + " file"
                                                   if path.is_dir() else "no such file"))
    return f"--{modality} {value}", path.read_bytes()


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


def read_query_vectors(path: Path) -> list[Query]:
    """The queries of a --vectors file: a .npy of one vector, or of one per row (never unpickled)."""
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise BadQuery(f"--vectors {path}: not a .npy file of vectors ({err})") from None
    if vectors.dtype.kind not in "fiu" or vectors.ndim not in (1, 2) or not vectors.size:
        raise BadQuery(f"--vectors {path}: a {vectors.dtype} array of shape {vectors.shape}; give one vector per row")
    return [Query(vector=row) for row in np.atleast_2d(vectors)]


def search_batch(searcher: Searcher, batch: list[Query], k: int, dedup: float | None = None
                 ) -> Iterator[dict[str, Any]]:
    """One line per query, in order: its results, or the error that stopped it (the batch goes on)."""
    for number, one in enumerate(batch):
        line: dict[str, Any] = {"query": {"text": one.text, "image": one.image, "audio": one.audio}}
        if one.vector is not None:  # a row of a --vectors file: its number, not its values
            line["query"] = {"vector": number}
        try:
            line["results"] = searcher.search(one, k, dedup=dedup)
        except DimensionMismatch:
            raise
        except BadQuery as err:
            line["error"] = str(err)
        yield line
