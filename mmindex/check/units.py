"""What a dataset has committed, unit by unit (the files written and recorded together), and how each kind of
file is checked to parse."""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mmindex import storage
from mmindex.dataset import Dataset, checksums, shard_name
from mmindex.dataset.duplicates import DuplicateStore, dedup_spaces, load_views
from mmindex.dataset.embeddings import DamagedEmbeddings, EmbeddingStore, load_vectors, recorded_spaces
from mmindex.dataset.indexes import INDEX, INFO, RECORD, PointerDamaged, pointer_path, published
from mmindex.dataset.members import shard_members
from mmindex.dataset.parquet import read_parquet
from mmindex.dataset.samples import sample_keys
from mmindex.index.store import IndexFiles, IndexStale
from mmindex.modalities import MODALITIES

PARSE_ERRORS = (OSError, ValueError, EOFError, RuntimeError, tarfile.TarError, pa.ArrowException)


@dataclass(frozen=True)
class Unit:
    """Files committed together under one checksum record."""

    kind: str                 # shard, rejects, embeddings, index, pointer (an index's damaged CURRENT),
                              # descriptors and groups (`mmindex dedup`'s)
    number: int | None        # the shard, for shard, embeddings and descriptors units
    record: str
    files: tuple[str, ...]
    store: EmbeddingStore | None = None   # embeddings, index and pointer units
    modality: str | None = None           # index and pointer units
    problem: str | None = None            # pointer units: what is wrong with it
    duplicates: DuplicateStore | None = None   # descriptors and groups units

    @property
    def label(self) -> str:
        space = self.store.space.name if self.store else self.duplicates.space if self.duplicates else ""
        return {"shard": f"shard {shard_name(self.number or 0)}",
                "descriptors": f"near-duplicate descriptors of shard {shard_name(self.number or 0)} in space {space!r}",
                "groups": f"near-duplicate groups of space {space!r}",
                "rejects": f"rejects {posixpath.basename(self.files[0])}",
                "embeddings": f"embeddings of shard {shard_name(self.number or 0)} in space {space!r}",
                "index": f"{self.modality} index of space {space!r}",
                "pointer": f"CURRENT of the {self.modality} index of space {space!r}"}[self.kind]


def units(dataset: Dataset) -> list[Unit]:
    """Every committed unit: shards, rejects, each space's embeddings per shard, each published index, and each
    space's near-duplicate descriptors per shard and groups."""
    found = [Unit("shard", n, dataset.record_path(n), (dataset.shard_path(n), dataset.samples_path(n)))
             for n in sorted({*dataset.committed_shards(), *dataset.recorded_shards()})]
    found += [Unit("rejects", None, dataset.rejects_record(name), (dataset.rejects_path(name),))
              for name in dataset.reject_names()]
    for space in recorded_spaces(dataset):
        store = EmbeddingStore(dataset, space)
        for number in sorted({*store.committed(), *store.recorded()}):
            files = _recorded_files(store.dataset.root, store.record_path(number), store.parquet_path(number),
                                    [store.vectors_path(number, modality) for modality in MODALITIES])
            found.append(Unit("embeddings", number, store.record_path(number), files, store))
        for modality in dataset.index_modalities(space.name):
            unit = index_unit(IndexFiles(store, modality))
            if unit is not None:
                found.append(unit)
    for space_name in dedup_spaces(dataset):
        duplicates = DuplicateStore(dataset, space_name)
        for number in sorted({*duplicates.described_shards(), *duplicates.recorded_shards()}):
            record = duplicates.descriptors_record(number)
            files = _recorded_files(dataset.root, record, duplicates.descriptors_parquet(number),
                                    [duplicates.descriptors_path(number, modality) for modality in MODALITIES])
            found.append(Unit("descriptors", number, record, files, duplicates=duplicates))
        if storage.exists(duplicates.summary_path) or storage.exists(duplicates.groups_record):
            files = _recorded_files(dataset.root, duplicates.groups_record, duplicates.summary_path,
                                    [duplicates.duplicates_path, *map(duplicates.pairs_path, MODALITIES)])
            found.append(Unit("groups", None, duplicates.groups_record, files, duplicates=duplicates))
    return found


def index_unit(files: IndexFiles) -> Unit | None:
    """The published generation of one index, None when none is built, or its damaged CURRENT (never followed)."""
    try:
        generation = published(files.root)
    except PointerDamaged as err:
        pointer = pointer_path(files.root)
        return Unit("pointer", None, "", (pointer,), files.embeddings, files.modality, f"damaged: {err.problem}")
    if generation is None:
        return None
    return Unit("index", None, generation.path(RECORD), (generation.path(INDEX), generation.keys_file(),
                                                         generation.path(INFO)),
                files.embeddings, files.modality)


def _recorded_files(root: str, record: str, commit: str, others: list[str]) -> tuple[str, ...]:
    """The files a unit's record names, and the file that commits it; without a record, that file and those of
    ``others`` that are there."""
    try:
        recorded = checksums.read_record(record)
    except checksums.RecordUnreadable:
        recorded = None
    if recorded is not None:
        names = [storage.join(root, name) for name in recorded]
    else:
        names = [path for path in others if storage.exists(path)]
    return tuple(sorted({commit, *names}))


def parse_problem(path: str, kind: str = "") -> str | None:
    """Whether a file of a unit of ``kind`` reads as what its name says it is; how it fails, in words, or None. (A
    shard tar is read whole with its samples parquet, by unit_problem.)"""
    try:
        if path.endswith(".parquet"):
            read_parquet(path)
        elif path.endswith(".npy"):
            (load_views if kind == "descriptors" else load_vectors)(path)
        elif path.endswith(".faiss"):
            import faiss

            if storage.is_local(path):
                faiss.read_index(path, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)  # parsed, not copied to memory
            else:
                faiss.deserialize_index(np.frombuffer(storage.read_bytes(path), dtype=np.uint8))
        elif path.endswith(".json"):
            json.loads(storage.read_bytes(path))
    except PARSE_ERRORS as err:
        return _unreadable(err)
    return None


def unit_problem(unit: Unit) -> str | None:
    """What disagrees between a unit's files, once each parses: a tar and its samples parquet, a shard's
    vectors and its embeddings parquet, an index and the embeddings it was built from."""
    try:
        if unit.kind == "shard":
            listed = set(sample_keys(unit.files[1]))
            if {member.key for member in shard_members(unit.files[0])} != listed:
                return f"{unit.files[0]} holds other samples than {unit.files[1]} lists"
        elif unit.kind == "embeddings" and unit.store is not None and unit.number is not None:
            unit.store.read(unit.number)
        elif unit.kind == "index" and unit.store is not None and unit.modality is not None:
            IndexFiles(unit.store, unit.modality).check(keys=True)
    except (DamagedEmbeddings, IndexStale) as err:
        return str(err)
    except PARSE_ERRORS as err:
        return _unreadable(err)
    return None


def _unreadable(err: BaseException) -> str:
    """A parse error in one short line (some libraries' messages span many)."""
    return f"unreadable ({' '.join(str(err).split())[:120] or type(err).__name__})"
