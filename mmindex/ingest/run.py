"""One ``mmindex ingest`` run: the driver that every executor serves.

The driver checks the sources, locks the dataset, clears what an interrupted run left, has an executor run the
stage's steps (declared in steps.py; the in-process executor by default, or Beam's from pipelines.executor),
then writes the rejects, records the run in mmindex.json and returns a typed report. The steps only discover,
validate, deduplicate, plan and write shards, so any executor gives the same dataset.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from mmindex import storage
from mmindex.dataset import Dataset
from mmindex.dataset.lock import exclusive
from mmindex.dataset.runs import ingest_settings, metadata_behind, read_metadata, record_run
from mmindex.dataset.samples import recorded_rejects, write_rejects
from mmindex.executors.local import LocalExecutor
from mmindex.ingest.discover import ManifestColumns, check_source
from mmindex.ingest.plan import DEFAULT_SHARD_SIZE, ShardSize
from mmindex.ingest.records import DUPLICATE, IngestOutcome, ShardWritten
from mmindex.ingest.steps import declare, outcome
from mmindex.media import Limits
from mmindex.stages import Executor, portable

log = logging.getLogger("mmindex")
REJECTS_NAMED = 5                                # rejected inputs a report names (the rejects file lists all)
NOT_RECORDED = ("changed", "rejected_first", "small_shards")   # report fields mmindex.json does not keep


@dataclass(frozen=True)
class IngestSettings:
    sources: tuple[str, ...]
    dataset: str
    shard_size: str = DEFAULT_SHARD_SIZE   # kept as written: it is recorded with the run
    workers: int = 1                       # processes on this machine (local executor, or Beam's local runner)
    limits: Limits = field(default_factory=Limits)
    columns: ManifestColumns = field(default_factory=ManifestColumns)

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("give at least one folder, manifest or tar to ingest")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        ShardSize.parse(self.shard_size)  # refuses a bad size before anything runs


@dataclass(frozen=True)
class IngestCounts:
    found: int
    ingested: int
    rejected: int
    duplicates: int           # within this run plus already in the dataset
    duplicates_in_run: int
    already_present: int
    bytes_written: int
    rejected_by_reason: dict[str, int]


@dataclass(frozen=True)
class IngestReport:
    run_id: str
    started: float
    finished: float
    sources: list[str]
    settings: dict[str, Any]
    counts: IngestCounts
    shards_added: list[ShardWritten]
    rejects_file: str | None
    stage: str = "ingest"    # as mmindex.json records each run
    changed: bool = False    # whether the run added shards or rejects (not recorded)
    rejected_first: list[tuple[str, str, str]] = field(default_factory=list)  # (source, reason, detail), by source
    small_shards: list[ShardWritten] = field(default_factory=list)  # new shards of a dataset that had some already

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def ingest(settings: IngestSettings, executor: Executor | None = None) -> IngestReport:
    """Ingests the sources into the dataset with ``executor`` (default: in-process); returns the run's report."""
    for src in settings.sources:
        check_source(src)
    root = settings.dataset
    if storage.is_local(root) and os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(f"the dataset {root!r} is a file; give a folder")
    dataset = Dataset(root)
    read_metadata(dataset)  # refuses a folder of another format before anything is written
    executor = executor or LocalExecutor(settings.workers)
    where = str if executor.local else portable  # a cluster's workers run in other folders
    with exclusive(dataset, "ingest"):
        removed = dataset.remove_incomplete()
        if removed:
            log.info("removed %d leftovers of an interrupted run", len(removed))
        committed = dataset.committed_shards()
        run_id = uuid.uuid4().hex[:12]
        started = time.time()
        scratch = dataset.scratch_path(run_id)
        stage = declare(map(where, settings.sources), [where(dataset.samples_path(n)) for n in committed],
                        Dataset(where(root)), committed[-1] + 1 if committed else 0,
                        ShardSize.parse(settings.shard_size), settings.limits, settings.columns, where(scratch))
        recorded = recorded_rejects(dataset)
        result = outcome(executor.run(stage))
        # Decompressed tars (every shard that read them is written), and the temporary files of tasks that a
        # cluster ran again after losing a worker.
        dataset.remove_incomplete()
        return _record(settings, dataset, result, run_id, started, recorded, bool(committed))


def _record(settings: IngestSettings, dataset: Dataset, outcome: IngestOutcome, run_id: str, started: float,
            recorded: set[tuple[str, str, str]], added_to: bool) -> IngestReport:
    """Writes the rejects not listed before and, when the run changed anything, records it in mmindex.json."""
    fresh = {(r.source, r.reason, r.detail) for r in outcome.rejects} - recorded
    duplicates = sum(r.reason == DUPLICATE for r in outcome.rejects)
    by_reason = Counter(r.reason for r in outcome.rejects if r.reason != DUPLICATE)
    shards = sorted(outcome.shards, key=lambda s: s.name)
    counts = IngestCounts(
        found=outcome.found,
        ingested=sum(s.samples for s in shards),
        rejected=sum(by_reason.values()),
        duplicates=duplicates + outcome.already_present,
        duplicates_in_run=duplicates,
        already_present=outcome.already_present,
        bytes_written=sum(s.bytes for s in shards),
        rejected_by_reason=dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
    report = IngestReport(
        run_id=run_id, started=started, finished=time.time(), sources=list(settings.sources),
        settings=ingest_settings(settings.shard_size, asdict(settings.limits), asdict(settings.columns)),
        counts=counts, shards_added=shards, rejects_file=write_rejects(dataset, fresh), changed=bool(shards or fresh),
        rejected_first=heapq.nsmallest(REJECTS_NAMED, ((r.source, r.reason, r.detail) for r in outcome.rejects
                                                       if r.reason != DUPLICATE)),
        small_shards=[s for s in shards if added_to and ShardSize.parse(settings.shard_size).small(s.samples, s.bytes)])
    behind = metadata_behind(dataset)
    if behind and not report.changed:
        log.info("ingest: %s did not list every committed shard (deleted, or a run was stopped before it recorded "
                 "itself): rewritten from the committed shards", dataset.metadata_path)
    if report.changed or behind:
        record_run(dataset, {k: v for k, v in asdict(report).items() if k not in NOT_RECORDED}, report.sources)
    return report
