"""duplicates/<space>/ in a dataset: near-duplicate descriptors per shard, the pairs found, the groups and keep-list.

    duplicates/<space>/descriptors/NNNNNN.parquet            key, modality, row (into the .npy), size (pixels,
                                                            seconds or characters: the keep rule's measure)
    duplicates/<space>/descriptors/<modality>/NNNNNN.npy     float16 (items, views, dim): the descriptor views
    duplicates/<space>/pairs/<modality>.parquet              every pair at or above the threshold (a < b)
    duplicates/<space>/duplicates.parquet                    modality, group, key, representative, similarity
    duplicates/<space>/summary.json                          per modality: threshold, shards compared, groups

A shard's descriptors are committed by their parquet (written last), so an incremental run describes only the
shards without one. The pairs, groups and summary are committed together under one checksum record; its digest
of duplicates.parquet tells a searcher when the groups changed.
"""

from __future__ import annotations

import io
import json
import posixpath
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mmindex import storage
from mmindex.dataset.checksums import Recorder, read_record, relative
from mmindex.dataset.embeddings import load_vectors
from mmindex.dataset.layout import Dataset, numbered, shard_name
from mmindex.dataset.parquet import ShardItems, parquet_bytes, read_parquet

DESCRIPTORS_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("row", pa.int32()),          # None: the member could not be read (``skipped`` says why)
    pa.field("size", pa.float64()),
    pa.field("skipped", pa.string()),
])
PAIRS_SCHEMA = pa.schema([
    pa.field("a", pa.string(), nullable=False),
    pa.field("b", pa.string(), nullable=False),
    pa.field("similarity", pa.float32(), nullable=False),
])
DUPLICATES_SCHEMA = pa.schema([
    pa.field("modality", pa.string(), nullable=False),
    pa.field("group", pa.int32(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("representative", pa.string(), nullable=False),
    pa.field("similarity", pa.float32(), nullable=False),   # to the representative (1 for itself)
])
Pair = tuple[str, str, float]


class ShardDescriptors(ShardItems):
    """One shard's descriptors: views by modality, and one row per member (described, or skipped with why)."""

    @property
    def views(self) -> dict[str, list[np.ndarray]]:
        return self.arrays

    def add(self, key: str, modality: str, views: np.ndarray | None, size: float | None = None,
            skipped: str | None = None) -> None:
        self.add_item(key, modality, views, size=size, skipped=skipped)


@dataclass(frozen=True)
class Described:
    """The described items of one modality in one shard, in row order."""

    keys: list[str]
    sizes: list[float]
    views: np.ndarray      # float16 (items, views, dim), memory-mapped where local


@dataclass(frozen=True)
class DuplicateStore:
    dataset: Dataset
    space: str

    @property
    def root(self) -> str:
        return storage.join(self.dataset.root, "duplicates", self.space)

    def descriptors_parquet(self, number: int) -> str:
        return storage.join(self.root, "descriptors", f"{shard_name(number)}.parquet")

    def descriptors_path(self, number: int, modality: str) -> str:
        return storage.join(self.root, "descriptors", modality, f"{shard_name(number)}.npy")

    def pairs_path(self, modality: str) -> str:
        return storage.join(self.root, "pairs", f"{modality}.parquet")

    @property
    def duplicates_path(self) -> str:
        return storage.join(self.root, "duplicates.parquet")

    @property
    def summary_path(self) -> str:
        return storage.join(self.root, "summary.json")

    @property
    def groups_record(self) -> str:
        return self.dataset.unit_record(f"duplicates/{self.space}/groups")

    def descriptors_record(self, number: int) -> str:
        return self.dataset.unit_record(f"duplicates/{self.space}/descriptors/{shard_name(number)}")

    def described_shards(self) -> list[int]:
        return numbered(storage.join(self.root, "descriptors", "*.parquet"))

    def recorded_shards(self) -> list[int]:
        """Shards whose descriptors have a checksum record (one whose parquet is gone, too)."""
        return numbered(self.dataset.unit_record(f"duplicates/{self.space}/descriptors/*"))

    def commit_descriptors(self, shard: ShardDescriptors) -> None:
        recorder = Recorder(self.dataset.root, self.descriptors_record(shard.number))
        for modality, views in sorted(shard.views.items()):
            buffer = io.BytesIO()
            np.save(buffer, np.stack(views).astype(np.float16), allow_pickle=False)
            recorder.write(self.descriptors_path(shard.number, modality), buffer.getvalue())
        recorder.commit(self.descriptors_parquet(shard.number), parquet_bytes(shard.rows, DESCRIPTORS_SCHEMA))

    def descriptors(self, number: int, modality: str) -> Described:
        """A described shard's items of ``modality`` (none when it has no such member)."""
        rows = [r for r in read_parquet(self.descriptors_parquet(number)).to_pylist()
                if r["modality"] == modality and r["row"] is not None]
        rows.sort(key=lambda r: r["row"])
        if not rows:
            return Described([], [], np.zeros((0, 1, 1), np.float16))
        views = load_views(self.descriptors_path(number, modality))
        return Described([r["key"] for r in rows], [r["size"] for r in rows], views)

    def pairs(self, modality: str) -> list[Pair]:
        path = self.pairs_path(modality)
        if not storage.exists(path):
            return []
        table = read_parquet(path)
        return list(zip(*(table.column(c).to_pylist() for c in ("a", "b", "similarity")), strict=True))

    def summary(self) -> dict[str, Any]:
        return json.loads(storage.read_bytes(self.summary_path)) if storage.exists(self.summary_path) else {}

    def commit_groups(self, pairs: dict[str, list[Pair]], rows: list[dict[str, Any]],
                      summary: dict[str, Any]) -> None:
        """Writes every modality's pairs, the groups and the summary as one unit (the summary commits it)."""
        recorder = Recorder(self.dataset.root, self.groups_record)
        for modality, found in sorted(pairs.items()):
            recorder.write(self.pairs_path(modality), parquet_bytes(
                [{"a": a, "b": b, "similarity": s} for a, b, s in found], PAIRS_SCHEMA))
        recorder.write(self.duplicates_path, parquet_bytes(rows, DUPLICATES_SCHEMA))
        recorder.commit(self.summary_path, json.dumps(summary, indent=2, sort_keys=True).encode())

    def groups_version(self) -> str | None:
        """The recorded digest of duplicates.parquet: it changes when the groups do (None: none found yet)."""
        record = read_record(self.groups_record) if storage.exists(self.groups_record) else None
        found = (record or {}).get(relative(self.dataset.root, self.duplicates_path))
        return found.sha256 if found else None

    def groups(self) -> list[dict[str, Any]]:
        """The duplicates parquet's rows (empty when no dedup ran)."""
        return read_parquet(self.duplicates_path).to_pylist() if storage.exists(self.duplicates_path) else []

    def removable(self, modalities: tuple[str, ...]) -> set[str]:
        """Keys in a group of one of ``modalities`` without being its representative: what curation leaves out."""
        return {row["key"] for row in self.groups() if row["modality"] in modalities and row["key"] !=
                row["representative"]}


def dedup_spaces(dataset: Dataset) -> list[str]:
    """The spaces `mmindex dedup` wrote groups or descriptors for (or left checksum records of), by folder name."""
    found = [*storage.glob(storage.join(dataset.root, "duplicates", "*", "*")),
             *storage.glob(posixpath.join(posixpath.dirname(dataset.unit_record("duplicates/*/x")), "*"))]
    return sorted({posixpath.basename(posixpath.dirname(path.rstrip("/"))) for path in found})


def load_views(path: str) -> np.ndarray:
    """A descriptor file: float16 (items, views, dim), memory-mapped where local, never unpickled."""
    try:
        return load_vectors(path, ndim=3)
    except (ValueError, EOFError) as err:
        raise ValueError(f"{path} is damaged ({err}): delete it and its parquet, then run `mmindex dedup` "
                         f"again") from None


def write_keep_list(path: str, keys: list[str]) -> None:
    """The keys to keep, one a line, sorted: what a training job or `ingest` of a curated copy reads."""
    storage.write_atomic(path, "".join(f"{key}\n" for key in sorted(keys)).encode())
