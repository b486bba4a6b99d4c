"""The ingest stage, declared once as steps (see mmindex.stages); every executor runs these.

    Existing -> ExistingKeys -> Present
    Source -> Discover -> FoundMedia | Found (+ Counted found)
    FoundMedia -> CheckByDecoding -> SampleRecord | Reject;  Found -> CheckByParsing -> SampleRecord | Reject
    SampleRecord -> Offer (its claim on its key; the record goes on, and checked candidates are counted)
    Offer + Present, by key -> ChooseWinners -> Winner | Reject (a duplicate) | Counted (already present)
    every Winner -> PlanShards -> Placed
    SampleRecord + Placed, by key -> JoinPlan -> ShardPart
    ShardPart, by shard -> WriteShards (its tar) -> Commit (its samples parquet) -> ShardWritten

What reaches the end (ShardWritten, Reject, Counted) is the run's outcome. Only an Offer, not the record, meets
the other samples of its key, so a cluster shuffles records once more, to meet their shard. The in-process
executor decodes media on threads and checks the rest in the driver's thread (or both on processes), keeps checked
bytes in memory within its budget so that shards are written without reading files again, and commits shards in
order, so that a run that stops leaves shards up to some number and the next run's plan continues from there
exactly as this one would have.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from mmindex.dataset import Dataset
from mmindex.dataset.samples import sample_keys
from mmindex.ingest.discover import ManifestColumns, discover_batches
from mmindex.ingest.plan import ShardSize, choose_winner, plan_winners
from mmindex.ingest.records import (
    Counted,
    Existing,
    Found,
    FoundMedia,
    IngestOutcome,
    Offer,
    Placed,
    Present,
    Reject,
    SampleRecord,
    ShardPart,
    ShardWritten,
    Source,
    Winner,
)
from mmindex.ingest.validate import check, decodes_media, small_files_only
from mmindex.ingest.write import WrittenTar, commit_shard, write_shard_tar
from mmindex.media import Limits
from mmindex.progress import Progress
from mmindex.stages import ByKey, Each, Stage, Whole, Worker


def discover(source: Source, columns: ManifestColumns, limits: Limits,
             scratch: str) -> Iterator[FoundMedia | Found | Counted]:
    for batch in discover_batches(source.path, columns, limits, scratch):
        yield Counted("found", len(batch))
        media = [decodes_media(candidate) for candidate in batch]
        if any(media):
            yield FoundMedia([c for c, decodes in zip(batch, media, strict=True) if decodes])
        if not all(media):
            yield Found([c for c, decodes in zip(batch, media, strict=True) if not decodes])


class KeepWhileRoom:
    """Says yes to keeping a checked file's bytes until the budget is spent (shared by one process's threads)."""

    def __init__(self, budget: int):
        self.left = budget
        self.lock = threading.Lock()

    def __call__(self, size: int) -> bool:
        if small_files_only(size):
            return True
        with self.lock:
            if size > self.left:
                return False
            self.left -= size
            return True


class Check:
    """Checks candidates: a SampleRecord, or a Reject with a reason, for each. Declared twice: CheckByDecoding
    checks FoundMedia, work in C that releases the GIL (on this machine, on threads, ahead of the other);
    CheckByParsing checks the rest (a JPEG's structure, text, metadata: Python, which holds the GIL) in the driver's
    thread, where threads would only wait for one another."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def setup(self, worker: Worker) -> None:
        self.keep = KeepWhileRoom(worker.keep_bytes // 2)  # the two steps share the budget

    def __call__(self, found: FoundMedia | Found) -> list[SampleRecord | Reject]:
        return [check(candidate, self.limits, self.keep) for candidate in found.candidates]


def existing_keys(existing: Existing) -> Iterator[Present]:
    return map(Present, sample_keys(existing.path))


class Offers:
    """A checked sample's Offer, with the record itself; counts the checked candidates as they come (in the driver,
    on this machine, where checks may run on processes whose log is not shown)."""

    def setup(self, worker: Worker) -> None:
        self.progress = Progress("ingest: checked")

    def __call__(self, checked: SampleRecord | Reject) -> tuple[Offer, SampleRecord] | tuple[Reject]:
        self.progress.add()
        if isinstance(checked, Reject):
            return (checked,)
        return Offer(checked.key, checked.source, checked.sizes), checked


def choose(key: str, elements: list[Offer | Present]) -> Iterator[Winner | Reject | Counted]:
    offers = [(e.source, e.sizes) for e in elements if isinstance(e, Offer)]
    winner, duplicates, held = choose_winner(key, offers, any(isinstance(e, Present) for e in elements))
    if held:
        yield Counted("already_present", held)
    yield from duplicates
    if winner:
        yield winner


def join_plan(key: str, elements: list[SampleRecord | Placed]) -> Iterator[ShardPart]:
    """The winning record of a key, with its shard; the losers were counted by ``choose``."""
    for placed in (e for e in elements if isinstance(e, Placed)):
        for record in elements:
            if isinstance(record, SampleRecord) and record.source == placed.source:
                yield ShardPart(placed.shard, record)


def write(shard: int, parts: list[ShardPart], dataset: Dataset, limits: Limits) -> list[WrittenTar]:
    return [write_shard_tar(shard, [part.record for part in parts], dataset, limits)]


def commit(tar: WrittenTar, dataset: Dataset) -> list[ShardWritten]:
    commit_shard(tar, dataset)
    return [tar.shard]


def declare(sources: Iterable[str], existing: Iterable[str], dataset: Dataset, first_shard: int, size: ShardSize,
            limits: Limits, columns: ManifestColumns, scratch: str) -> Stage:
    """The ingest of ``sources`` into ``dataset``, whose committed shards' samples parquet are ``existing`` and
    whose new shards start at ``first_shard``; compressed tars are unpacked under ``scratch``."""
    return Stage("ingest", [*map(Source, sources), *map(Existing, existing)], [
        Each("ExistingKeys", existing_keys, Existing),
        Each("Discover", partial(discover, columns=columns, limits=limits, scratch=scratch), Source),
        Each("CheckByDecoding", Check(limits), FoundMedia, runs="cpu"),
        Each("CheckByParsing", Check(limits), Found, runs="python"),
        Each("Offer", Offers(), (SampleRecord, Reject)),
        ByKey("ChooseWinners", choose, (Offer, Present), key=_key),
        Whole("PlanShards", partial(plan_winners, first_shard=first_shard, size=size), Winner),
        ByKey("JoinPlan", join_plan, (SampleRecord, Placed), key=_key),
        ByKey("WriteShards", partial(write, dataset=dataset, limits=limits), ShardPart, runs="io", key=_shard),
        Each("Commit", partial(commit, dataset=dataset), WrittenTar),
    ], (ShardWritten, Reject, Counted), scratch)


def _key(element: Any) -> str:
    return element.key


def _shard(part: ShardPart) -> int:
    return part.shard


def outcome(facts: Iterable[ShardWritten | Reject | Counted]) -> IngestOutcome:
    """The run's outcome from what reached the end of its steps."""
    shards, rejects, counts = [], [], Counter[str]()
    for fact in facts:
        if isinstance(fact, ShardWritten):
            shards.append(fact)
        elif isinstance(fact, Reject):
            rejects.append(fact)
        else:
            counts[fact.what] += fact.n
    return IngestOutcome(shards, rejects, counts["found"], counts["already_present"])
