"""indexes/<space>/<modality>/ in a dataset, and the check that an index agrees with the embeddings.

    index.faiss   the FAISS index; id i is row i of keys.parquet
    keys.parquet  id -> key, shard
    info.json     type, parameters (nprobe), measured recall, build time, memory, vectors per shard

info.json is written last: an index exists once it does. Its per-shard counts are what the consistency
check compares with the committed embeddings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import faiss
import pyarrow as pa

from mmindex import storage
from mmindex.dataset import read_parquet
from mmindex.embed.store import EmbeddingStore
from mmindex.index.vectors import counts, shard_vectors

KEYS_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("shard", pa.string(), nullable=False)])


class IndexMissing(FileNotFoundError):
    """No index has been built for this space and modality."""


class IndexStale(RuntimeError):
    """The index and the dataset disagree."""


@dataclass(frozen=True)
class IndexFiles:
    embeddings: EmbeddingStore
    modality: str

    @property
    def root(self) -> str:
        return storage.join(self.embeddings.dataset.root, "indexes", self.embeddings.space.name, self.modality)

    def path(self, name: str) -> str:
        return storage.join(self.root, name)

    def exists(self) -> bool:
        return storage.exists(self.path("info.json"))

    def info(self) -> dict[str, Any]:
        if not self.exists():
            root = self.embeddings.dataset.root
            raise IndexMissing(f"no {self.modality} index for space {self.embeddings.space.name!r} in {root}: "
                               f"run `mmindex index {root} --model {self.embeddings.space.name}`")
        return json.loads(storage.read_bytes(self.path("info.json")))

    def load(self) -> tuple[faiss.Index, list[str]]:
        """The index (memory-mapped where FAISS can) with its search parameters set, and its keys by id."""
        info = self.info()
        local = storage.is_local(self.path("index.faiss"))
        if local:
            index = faiss.read_index(self.path("index.faiss"), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
        else:
            index = faiss.deserialize_index(storage.read_bytes(self.path("index.faiss")))
        apply_parameters(index, info["parameters"])
        keys = read_parquet(self.path("keys.parquet"), columns=["key"]).column("key").to_pylist()
        if len(keys) != index.ntotal:
            raise IndexStale(f"{self.root}: the index holds {index.ntotal:,} vectors but keys.parquet names "
                             f"{len(keys):,}; rebuild it with `mmindex index {self.embeddings.dataset.root}`")
        return index, keys

    def check(self, keys: bool = False) -> None:
        """Raises IndexStale, saying how to fix it, when the index and the committed embeddings disagree:
        vectors per shard always; with ``keys``, also every id's key against the embeddings' (slower)."""
        indexed, embedded = self.info()["shards"], counts(self.embeddings, self.modality)
        if indexed == embedded:
            if keys:
                self._check_keys()
            return
        new = sorted(set(embedded) - set(indexed))
        gone = sorted(set(indexed) - set(embedded))
        changed = sorted(s for s in set(indexed) & set(embedded) if indexed[s] != embedded[s])
        root, space = self.embeddings.dataset.root, self.embeddings.space.name
        problems = []
        if new:
            problems.append(f"{len(new)} embedded shard(s) not in the index ({', '.join(new[:5])}...)")
        if gone or changed:
            problems.append(f"{len(gone) + len(changed)} indexed shard(s) whose vectors are gone or changed")
        fix = (f"mmindex index {root} --model {space} --update" if new and not (gone or changed)
               else f"mmindex index {root} --model {space}")
        raise IndexStale(f"the {self.modality} index of space {space!r} does not match the embeddings: "
                         f"{'; '.join(problems)}. Run `{fix}`.")


    def _check_keys(self) -> None:
        table = read_parquet(self.path("keys.parquet"))
        by_shard: dict[str, list[str]] = {}
        for key, shard in zip(table.column("key").to_pylist(), table.column("shard").to_pylist(), strict=True):
            by_shard.setdefault(shard, []).append(key)
        for shard, keys in by_shard.items():
            if keys != shard_vectors(self.embeddings, int(shard), self.modality).keys:
                raise IndexStale(f"ids of shard {shard} in the {self.modality} index map to other samples than its "
                                 f"embeddings; rebuild: `mmindex index {self.embeddings.dataset.root} --model "
                                 f"{self.embeddings.space.name}`")


def apply_parameters(index: faiss.Index, parameters: dict[str, Any]) -> None:
    if parameters:
        faiss.ParameterSpace().set_index_parameters(index, ",".join(f"{k}={v}" for k, v in parameters.items()))
