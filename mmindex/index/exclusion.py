"""``mmindex index --exclude-duplicates``: the non-representatives of a modality's near-duplicate groups (what
`mmindex dedup` stored under duplicates/<space>/) left out of its index.

info.json records what was left out: the vectors per shard (the index's vectors and these add up to the
embeddings), a digest of the keys, and the groups' version when they were read. A later dedup run that changes
the keys left out makes the index stale, as new embeddings do; one that changes nothing else (another modality's
groups) does not: the version is the cheap first check, the digest the exact one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from mmindex.dataset.duplicates import DuplicateStore
from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.index.vectors import Rows, ShardVectors
from mmindex.sizes import counted


@dataclass(frozen=True)
class Exclusion:
    keys: frozenset[str]   # the modality's non-representatives
    digest: str            # sha256 of the keys, sorted, one a line
    groups: str | None     # DuplicateStore.groups_version when they were read

    @classmethod
    def of(cls, duplicates: DuplicateStore, modality: str) -> Exclusion:
        keys = duplicates.removable((modality,))
        digest = hashlib.sha256("".join(f"{key}\n" for key in sorted(keys)).encode()).hexdigest()
        return cls(frozenset(keys), digest, duplicates.groups_version())

    @classmethod
    def read(cls, store: EmbeddingStore, modality: str) -> Exclusion:
        """The modality's near-duplicates to leave out; FileNotFoundError, saying to run `mmindex dedup`, unless
        its groups cover every embedded shard."""
        duplicates = DuplicateStore(store.dataset, store.space.name)
        compared = set(duplicates.summary().get(modality, {}).get("shards", []))
        missing = sorted(set(store.vector_counts(modality)) - compared)
        if missing:
            run = f"run `mmindex dedup {store.dataset.root} --model {store.space.name}` first"
            if not compared:
                raise FileNotFoundError(f"--exclude-duplicates: no near-duplicate groups of {modality} in space "
                                        f"{store.space.name!r}: {run}")
            raise FileNotFoundError(f"--exclude-duplicates: the near-duplicate groups of {modality} do not cover "
                                    f"{counted(len(missing), 'embedded shard')} ({', '.join(missing[:5])}"
                                    f"{'...' if len(missing) > 5 else ''}): {run}")
        return cls.of(duplicates, modality)

    def keep(self, shard: ShardVectors) -> ShardVectors:
        """The shard's vectors without those left out."""
        rows = [row for row, key in enumerate(shard.keys) if key not in self.keys]
        if len(rows) == len(shard.keys):
            return shard
        return ShardVectors(shard.number, [shard.keys[row] for row in rows], Rows(shard.vectors, rows))

    def record(self, left_out: dict[str, int]) -> dict[str, Any]:
        """info.json's ``excluded``: vectors left out per shard (by name), and what says whether they still are."""
        return {"vectors": sum(left_out.values()), "shards": {s: n for s, n in sorted(left_out.items()) if n},
                "keys_sha256": self.digest, "groups": self.groups}


def accounted(info: dict[str, Any]) -> dict[str, int]:
    """Embedded vectors per shard that an index accounts for: those it holds and those it left out."""
    counts = Counter(info["shards"])
    counts.update(info.get("excluded", {}).get("shards", {}))
    return {shard: n for shard, n in sorted(counts.items()) if n}


def stale_exclusion(info: dict[str, Any], store: EmbeddingStore, modality: str) -> str | None:
    """Why the near-duplicates an index left out are no longer the groups' non-representatives (None: they are)."""
    recorded = info.get("excluded")
    if not recorded:
        return None
    duplicates = DuplicateStore(store.dataset, store.space.name)
    version = duplicates.groups_version()
    if version == recorded["groups"] or Exclusion.of(duplicates, modality).digest == recorded["keys_sha256"]:
        return None
    found = "were removed" if version is None else "changed (`mmindex dedup` ran again)"
    return (f"the {modality} index of space {store.space.name!r} leaves out near-duplicates, but the groups "
            f"{found} since it was built. Run `mmindex index {store.dataset.root} --model {store.space.name}"
            f"{' --exclude-duplicates' if version else ''}`.")
