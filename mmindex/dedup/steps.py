"""The dedup stage, declared once as steps (see mmindex.stages), for the in-process executor or any Beam runner.

    shard number -> Describe (descriptors of its images, clips and texts, committed per shard) -> ShardDescribed
    Compare (one per modality) + every ShardDescribed -> Group (a Whole step) -> ModalityGroups

Describe runs on the workers, one shard at a time, and skips nothing it can read: a member that cannot be
decoded is listed with the reason. Group runs once after them all: for each modality, the shards described
since the last run are compared against every shard (mmindex.dedup.pairs), their pairs joined to those found
before, and the groups formed again from all pairs, so the result equals a full run's.

Groups are connected components of the pairs. Each keeps one representative, by the keep rule: the most pixels
(images), the longest clip (audio) or the longest text, then the smallest key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmindex import storage
from mmindex.dataset import Dataset, shard_name
from mmindex.dataset.duplicates import Described, DuplicateStore, Pair, ShardDescriptors
from mmindex.dataset.members import shard_members
from mmindex.dedup.descriptors import DESCRIBE, VERSION
from mmindex.dedup.pairs import Items, components, near_pairs, similarity
from mmindex.media import Rejected
from mmindex.modalities import modality_of
from mmindex.stages import Each, Stage, Whole, portable


@dataclass(frozen=True)
class ShardDescribed:
    number: int
    skipped: dict[str, int]   # reason -> members


@dataclass(frozen=True)
class Compare:
    """Form the groups of one modality at ``threshold``."""

    modality: str
    threshold: float


@dataclass(frozen=True)
class ModalityGroups:
    modality: str
    threshold: float
    items: int
    groups: int
    removable: int          # members that are not their group's representative
    new_shards: int         # shards compared for the first time (all of them in a full run)


class Describe:
    """Describes and commits one shard's members (a ShardDescribed of what it holds)."""

    def __init__(self, root: str, space: str):
        self.root, self.space = root, space

    def __call__(self, number: int) -> list[ShardDescribed]:
        store = DuplicateStore(Dataset(self.root), self.space)
        path = store.dataset.shard_path(number)
        shard, skipped = ShardDescriptors(number), {}
        for member in shard_members(path):
            modality = modality_of(member.ext)
            if modality not in DESCRIBE:
                continue
            try:
                found = DESCRIBE[modality](storage.read_bytes(path, member.offset, member.size))
                shard.add(member.key, modality, found.views, found.size)
            except Rejected as err:
                shard.add(member.key, modality, None, skipped=f"{err.reason}: {err.detail}")
                skipped[err.reason] = skipped.get(err.reason, 0) + 1
        store.commit_descriptors(shard)
        return [ShardDescribed(number, skipped)]


def _items(parts: list[Described]) -> tuple[list[str], list[float], Items]:
    """The keys, sizes and views of shards' items, one after another (the views left where they are stored)."""
    return ([key for part in parts for key in part.keys], [size for part in parts for size in part.sizes],
            Items([part.views for part in parts]))


def group_rows(modality: str, keys: list[str], sizes: list[float], views: Items,
               pairs: list[Pair]) -> list[dict[str, Any]]:
    """The duplicates rows of one modality: its groups numbered by their smallest key, members in key order."""
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rank = {keys[i]: r for r, i in enumerate(order)}
    rows = []
    for number, members in enumerate(components(len(keys), [(rank[a], rank[b]) for a, b, _ in pairs])):
        items = [order[r] for r in members]
        best = min(items, key=lambda i: (-sizes[i], keys[i]))
        rows += [{"modality": modality, "group": number, "key": keys[i], "representative": keys[best],
                  "similarity": 1.0 if i == best else similarity(views.item(i), views.item(best))} for i in items]
    return rows


class Group:
    """Compares what is new, joins the pairs found before, and commits every modality's groups as one unit."""

    def __init__(self, root: str, space: str, max_memory: int):
        self.root, self.space, self.max_memory = root, space, max_memory

    def __call__(self, elements: list[Any]) -> list[ModalityGroups | ShardDescribed]:
        store = DuplicateStore(Dataset(self.root), self.space)
        summary, shards = store.summary(), store.described_shards()
        asked = sorted((e for e in elements if isinstance(e, Compare)), key=lambda e: e.modality)
        kept = {e.modality for e in asked}
        pairs = {m: store.pairs(m) for m in summary if m not in kept}
        rows = [row for row in store.groups() if row["modality"] not in kept]
        reports = []
        for compare in asked:
            before = summary.get(compare.modality, {})
            valid = before.get("threshold") == compare.threshold and before.get("version") == VERSION
            compared = set(before.get("shards", [])) if valid else set()
            old = [store.descriptors(n, compare.modality) for n in shards if shard_name(n) in compared]
            new = [store.descriptors(n, compare.modality) for n in shards if shard_name(n) not in compared]
            keys, sizes, views = _items(old + new)
            found = near_pairs(_items(old)[2], _items(new)[2], compare.threshold, self.max_memory)
            joined = (store.pairs(compare.modality) if valid else []) + [
                (*sorted((keys[i], keys[j])), s) for i, j, s in found]
            pairs[compare.modality] = sorted(joined)
            modality_rows = group_rows(compare.modality, keys, sizes, views, pairs[compare.modality])
            rows += modality_rows
            groups = len({row["group"] for row in modality_rows})
            summary[compare.modality] = {"threshold": compare.threshold, "version": VERSION, "items": len(keys),
                                         "shards": [shard_name(n) for n in shards], "groups": groups,
                                         "removable": len(modality_rows) - groups}
            reports.append(ModalityGroups(compare.modality, compare.threshold, len(keys), groups,
                                          len(modality_rows) - groups, len(new)))
        rows.sort(key=lambda r: (r["modality"], r["group"], r["key"]))
        store.commit_groups(pairs, rows, summary)
        return [*reports, *(e for e in elements if isinstance(e, ShardDescribed))]  # the driver counts these


def declare(store: DuplicateStore, pending: list[int], thresholds: dict[str, float], max_memory: int) -> Stage:
    """Describing the ``pending`` shards, then grouping each modality of ``thresholds`` at its threshold, with the
    descriptors searched against taking about ``max_memory`` bytes at a time."""
    root = portable(store.dataset.root)
    start: list[Any] = [*pending, *(Compare(m, t) for m, t in sorted(thresholds.items()))]
    return Stage("dedup", start, [Each("Describe", Describe(root, store.space), int, runs="cpu"),
                                  Whole("Group", Group(root, store.space, max_memory), (Compare, ShardDescribed))],
                 (ModalityGroups, ShardDescribed), store.dataset.scratch_path("dedup"))
