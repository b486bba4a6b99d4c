"""A space's index of one modality as FAISS reads and writes it, and the check that it agrees with the embeddings.

Its files are a generation (mmindex.dataset.indexes). info.json records the search parameters (nprobe or
efSearch, re-rank depth) and the vectors per shard, which the consistency check compares with the committed
embeddings. Every read below resolves the published generation once and reads all its files from it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import faiss
import numpy as np

from mmindex import storage
from mmindex.dataset.checksums import unit_problem
from mmindex.dataset.duplicates import DuplicateStore
from mmindex.dataset.embeddings import EmbeddingStore, embedded_keys
from mmindex.dataset.indexes import INDEX, LISTS, RECORD, Generation, IdColumn, published, reading
from mmindex.dataset.layout import shard_name
from mmindex.dataset.samples import read_samples
from mmindex.index.exclusion import Exclusion, accounted, stale_exclusion
from mmindex.index.searchable import ExactVectors, SearchableIndex
from mmindex.index.vectors import Rows, Unmapped
from mmindex.native import flush_c_stdio
from mmindex.sizes import counted

T = TypeVar("T")


class IndexMissing(FileNotFoundError):
    """No index has been built for this space and modality."""


class IndexStale(RuntimeError):
    """The index and the dataset disagree."""


@dataclass(frozen=True)
class LoadedIndex:
    """One build of an index, ready to search: its generation and info, the index, and the key and shard of
    each id, all read from that one generation."""

    generation: Generation
    info: dict[str, Any]
    index: SearchableIndex
    keys: IdColumn
    shards: IdColumn


@dataclass(frozen=True)
class IndexFiles:
    embeddings: EmbeddingStore
    modality: str

    @property
    def root(self) -> str:
        return self.embeddings.dataset.index_path(self.embeddings.space.name, self.modality)

    def exists(self) -> bool:
        return published(self.root) is not None

    @property
    def duplicates(self) -> DuplicateStore:
        return DuplicateStore(self.embeddings.dataset, self.embeddings.space.name)

    @property
    def rebuild(self) -> str:
        return f"rebuild it with `mmindex index {self.embeddings.dataset.root} --model {self.embeddings.space.name}`"

    def _pinned(self, read: Callable[[Generation], T]) -> T:
        """``read`` over the files of the published generation, held against removal while it reads; again
        with the new one if a build replaced and removed it in between."""
        for attempt in range(3):
            generation = published(self.root)
            if generation is None:
                root = self.embeddings.dataset.root
                raise IndexMissing(f"no {self.modality} index for space {self.embeddings.space.name!r} in {root}: "
                                   f"run `mmindex index {root} --model {self.embeddings.space.name}`")
            try:
                with reading(generation):
                    return read(generation)
            except FileNotFoundError:
                if attempt == 2 or published(self.root) == generation:
                    raise
        raise AssertionError("unreachable")

    def info(self) -> dict[str, Any]:
        return self._pinned(Generation.info)

    def load(self) -> tuple[SearchableIndex, IdColumn, IdColumn]:
        """The index (memory-mapped where FAISS can) set up as it was tuned, and the key and shard of each id."""
        loaded = self.load_published()
        return loaded.index, loaded.keys, loaded.shards

    def load_published(self, check: bool = False) -> LoadedIndex:
        """The published build whole, with the generation it came from (a server compares it with CURRENT);
        with ``check``, refused (IndexStale) if that same generation disagrees with the embeddings."""
        def read(generation: Generation) -> LoadedIndex:
            if check:
                self._check(generation, keys=False)
            return self._load(generation)

        return self._pinned(read)

    def _load(self, generation: Generation) -> LoadedIndex:
        info = generation.info()
        keys, shards = generation.keys()
        searchable = SearchableIndex(self._read_index(generation, info, mmap=True))
        if len(keys) != searchable.ntotal:
            raise IndexStale(f"{self.root}: the index holds {searchable.ntotal:,} vectors but its keys file names "
                             f"{len(keys):,}; rebuild it with `mmindex index {self.embeddings.dataset.root}`")
        rerank = info.get("rerank", 0)
        if rerank:
            searchable.exact = self._exact(info, keys)
        searchable.set(info["parameters"], rerank)
        return LoadedIndex(generation, info, searchable, keys, shards)

    def exact(self, loaded: LoadedIndex) -> ExactVectors:
        """The exact vector of each id of ``loaded``: its re-ranking's, else read from the embeddings on disk once
        for the build (searches use them only to re-rank, so an index tuned without re-ranking is unchanged)."""
        if loaded.index.exact is None:
            loaded.index.exact = self._exact(loaded.info, loaded.keys)
        return loaded.index.exact

    def _exact(self, info: dict[str, Any], keys: Sequence[str]) -> ExactVectors:
        """The embeddings of the ids (by shard, in id order, as info.json lists them; of a shard that near-duplicates
        were left out of, the rows of the ids' keys), read when re-ranking asks for them: not mapped, since a search
        process would keep every page it ever touched (9 GB after 1,000 queries on 10M vectors)."""
        left_out = info.get("excluded", {}).get("shards", {})
        arrays: list[np.ndarray | Rows | Unmapped] = []
        first = 0
        for name, count in info["shards"].items():
            vectors = Unmapped.of(self._vectors(name, count + left_out.get(name, 0)))
            if left_out.get(name):
                row = {key: r for r, key in enumerate(embedded_keys(self.embeddings.read(int(name))[0], self.modality))}
                vectors = Rows(vectors, [row[key] for key in keys[first:first + count]])
            arrays.append(vectors)
            first += count
        return ExactVectors(arrays)

    def _vectors(self, shard: str, count: int) -> np.ndarray:
        """A shard's embeddings, which re-ranking reads by id: they must be the ones the index was built from."""
        vectors = self.embeddings.vectors(int(shard), self.modality)
        if len(vectors) != count:
            raise IndexStale(f"{self.embeddings.vectors_path(int(shard), self.modality)} holds {len(vectors):,} "
                             f"vectors but the index has {count:,} of shard {shard}; rebuild it with `mmindex index "
                             f"{self.embeddings.dataset.root} --model {self.embeddings.space.name}`")
        return vectors

    def check(self, keys: bool = False) -> None:
        """Raises IndexStale, saying how to fix it, when the index and the dataset disagree: vectors per shard
        against the committed embeddings always; with ``keys``, also every id against the embeddings and the
        samples parquet (slower)."""
        self._pinned(lambda generation: self._check(generation, keys))

    def _read_index(self, generation: Generation, info: dict[str, Any], mmap: bool = False) -> faiss.Index:
        """The FAISS index as saved (``mmap``: a local file mapped, read-only); IndexStale, saying to rebuild,
        when the file is damaged or does not hold the vectors its info records."""
        path = generation.path(INDEX)
        self._intact(generation)
        try:
            index = read_index(path, mmap)
        except RuntimeError as err:  # FAISS's read errors: a truncated or overwritten file
            reason = str(err).strip().splitlines()[-1][:120]
            raise IndexStale(f"{path} is damaged ({reason}): {self.rebuild}") from None
        recorded = sum(info["shards"].values())
        if index.ntotal != recorded:
            raise IndexStale(f"{path} is damaged (it holds {index.ntotal:,} vectors, its info.json {recorded:,}): "
                             f"{self.rebuild}")
        return index

    def intact(self) -> None:
        """IndexStale, saying to rebuild, when a file of the published generation is missing or not of its
        recorded size (the cheap check, made before an --update extends it)."""
        self._pinned(self._intact)

    def _intact(self, generation: Generation) -> None:
        problem = unit_problem(self.embeddings.dataset.root, generation.path(RECORD))
        if problem:
            raise IndexStale(f"{problem[0]} is damaged ({problem[1]}): {self.rebuild}")

    def _check(self, generation: Generation, keys: bool) -> None:
        info = generation.info()
        problem = self.mismatch(info)
        if problem:
            raise IndexStale(problem)
        if keys:  # the full check also opens the index file (loading it checks it too)
            self._read_index(generation, info, mmap=True)
            left_out = Exclusion.of(self.duplicates, self.modality).keys if info.get("excluded") else frozenset()
            self._check_ids(generation, left_out)

    def mismatch(self, info: dict[str, Any]) -> str | None:
        """What disagrees between an index's info and the embeddings (vectors per shard) and near-duplicate
        groups (what it left out), with the command that fixes it; None when nothing does."""
        indexed, embedded = accounted(info), self.embeddings.vector_counts(self.modality)
        if indexed == embedded:
            return stale_exclusion(info, self.embeddings, self.modality)
        new = sorted(set(embedded) - set(indexed))
        gone = sorted(set(indexed) - set(embedded))
        changed = sorted(s for s in set(indexed) & set(embedded) if indexed[s] != embedded[s])
        root, space = self.embeddings.dataset.root, self.embeddings.space.name
        problems = []
        if new:
            problems.append(f"{counted(len(new), 'embedded shard')} not in the index ({', '.join(new[:5])}"
                            f"{'...' if len(new) > 5 else ''})")
        if gone or changed:
            problems.append(f"{counted(len(gone) + len(changed), 'indexed shard')} whose vectors are gone or changed")
        fix = (f"mmindex index {root} --model {space} --update" if new and not (gone or changed)
               else f"mmindex index {root} --model {space}{' --exclude-duplicates' if info.get('excluded') else ''}")
        return (f"the {self.modality} index of space {space!r} does not match the embeddings: "
                f"{'; '.join(problems)}. Run `{fix}`.")

    def _check_ids(self, generation: Generation, left_out: frozenset[str]) -> None:
        """Every id maps to its shard's embedded item (but those ``left_out``) and to a sample of that shard, and
        every sample of the modality in an indexed shard has an item (embedded, or skipped with a reason)."""
        by_shard: dict[str, list[str]] = {}
        for key, shard in zip(*generation.keys(), strict=True):
            by_shard.setdefault(shard, []).append(key)
        dataset = self.embeddings.dataset
        rebuild = f"mmindex index {dataset.root} --model {self.embeddings.space.name}"
        for shard, keys in by_shard.items():
            items = self.embeddings.read(int(shard))[0]
            if keys != [key for key in embedded_keys(items, self.modality) if key not in left_out]:
                raise IndexStale(f"ids of shard {shard} in the {self.modality} index map to other samples than its "
                                 f"embeddings; rebuild: `{rebuild}`")
            samples = read_samples(dataset.samples_path(int(shard)), columns=["key", "modalities"]).to_pylist()
            unknown = set(keys) - {row["key"] for row in samples}
            if unknown:
                raise IndexStale(f"ids of shard {shard} in the {self.modality} index that map to no sample of "
                                 f"{dataset.samples_path(int(shard))}: {len(unknown):,} (e.g. {min(unknown)}). "
                                 f"Re-embed that shard (delete its embeddings) and rebuild: `{rebuild}`")
            listed = {r["key"] for r in items.to_pylist() if r["modality"] == self.modality}
            missing = {r["key"] for r in samples if self.modality in r["modalities"]} - listed
            if missing:
                raise IndexStale(f"samples of shard {shard} with {self.modality} missing from its embeddings and so "
                                 f"from the index: {len(missing):,} (e.g. {min(missing)}). Re-embed that shard "
                                 f"(delete its embeddings) and rebuild: `{rebuild}`")


def read_index(path: str, mmap: bool = False) -> faiss.Index:
    """An index file; ``mmap``: a local one mapped read-only. Its on-disk lists, if any, are read beside it."""
    if not storage.is_local(path):
        return faiss.deserialize_index(np.frombuffer(storage.read_bytes(path), np.uint8))
    if not os.path.exists(os.path.join(os.path.dirname(path), LISTS)):
        return faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0)
    # on-disk lists are always memory-mapped, by FAISS when it reads them (its MMAP flag would skip them)
    with native_stdout_to_stderr():  # FAISS says where it found them, on stdout
        return faiss.read_index(path, faiss.IO_FLAG_ONDISK_SAME_DIR | (faiss.IO_FLAG_READ_ONLY if mmap else 0))


@contextlib.contextmanager
def native_stdout_to_stderr() -> Iterator[None]:
    """What native code prints on stdout goes to stderr while the block runs: stdout is for the command's report."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        flush_c_stdio()
        os.dup2(saved, 1)
        os.close(saved)


def not_embedded(store: EmbeddingStore) -> str | None:
    """What to say when ingested shards have no embeddings in the space yet: no index can find their samples."""
    pending = store.pending()
    if not pending:
        return None
    root, space = store.dataset.root, store.space.name
    verb = "is" if len(pending) == 1 else "are"
    return (f"{counted(len(pending), 'ingested shard')} of {root} {verb} not embedded in space {space!r} yet "
            f"({', '.join(shard_name(n) for n in pending[:5])}{'...' if len(pending) > 5 else ''}): no index can "
            f"find their samples. Run `mmindex embed {root} --model {space}`, then `mmindex index {root} --model "
            f"{space} --update`.")
