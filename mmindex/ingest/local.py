"""The local executor: an ingest job on this machine, without a pipeline runner's per-element costs.

Candidates are checked in batches while they are discovered: with one worker on a few threads of this
process (Pillow's decoders, libsndfile, hashlib and file reads release the GIL), with small files read ahead
on a thread of their own; with more workers on that many processes. The checked bytes come back with the
records, up to a memory budget, so that shards are written from the bytes that were checked, without reading
the files again. Then each key's winner is chosen, shards are planned, their tars written on threads of this
process and committed in shard order (so the next run continues one that stopped exactly as it would have
gone on). The steps are the ones the Beam pipeline runs, so both give the same dataset.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial

from mmindex.dataset import Dataset
from mmindex.dataset.samples import sample_keys
from mmindex.ingest.discover import discover_batches
from mmindex.ingest.plan import choose_winner, plan_winners
from mmindex.ingest.records import Candidate, IngestOutcome, Reject, SampleRecord
from mmindex.ingest.run import IngestJob
from mmindex.ingest.validate import Read, check, read_ahead, small_files_only
from mmindex.ingest.write import WrittenTar, commit_shard, write_shard_tar
from mmindex.media import Limits
from mmindex.parallel import ordered_map
from mmindex.progress import Progress

log = logging.getLogger("mmindex")
KEPT_BYTES = 2**30  # checked bytes held in memory for writing (past it, files are read again when written)


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


_keep: Callable[[int], bool] = small_files_only  # in a checking process: its share of the budget


def _start_checker(budget: int) -> None:
    global _keep
    _keep = KeepWhileRoom(budget)


def check_batch(batch: list[Candidate], limits: Limits, keep: Callable[[int], bool] | None = None
                ) -> list[SampleRecord | Reject]:
    return [check(candidate, limits, keep or _keep) for candidate in batch]


ReadBatch = list[tuple[Candidate, tuple[Read | None, ...]]]


def read_batch(batch: list[Candidate], limits: Limits) -> ReadBatch:
    return [(candidate, read_ahead(candidate, limits)) for candidate in batch]


def check_read_batch(batch: ReadBatch, limits: Limits, keep: Callable[[int], bool]) -> list[SampleRecord | Reject]:
    return [check(candidate, limits, keep, read) for candidate, read in batch]


def _write_tar(shard: tuple[int, list[SampleRecord]], dataset: Dataset, limits: Limits) -> WrittenTar:
    return write_shard_tar(shard[0], shard[1], dataset, limits)


class LocalExecutor:
    """Runs a job with ``workers`` processes checking (1: this process, on ``threads`` threads)."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        self.workers = workers
        self.threads = threads or min(4, os.cpu_count() or 1)

    def _checkers(self) -> tuple[Executor, Callable]:
        """The pool that checks batches, and the function it runs (on threads: over batches already read)."""
        if self.workers == 1:
            return ThreadPoolExecutor(self.threads), partial(check_read_batch, keep=KeepWhileRoom(KEPT_BYTES))
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_checker, initargs=(KEPT_BYTES // self.workers,))
        return pool, check_batch

    def __call__(self, job: IngestJob) -> IngestOutcome:
        limits = job.settings.limits
        records, rejects, found = self._check(job)
        present = {key for path in job.existing for key in sample_keys(path)}
        winners, already_present = [], 0
        for key, group in records.items():
            winner, duplicates, held = choose_winner(key, [(r.source, r.sizes) for r in group], key in present)
            rejects += duplicates
            already_present += held
            if winner:
                winners.append(winner)
        plan = plan_winners(winners, job.first_shard, job.shard_size)
        shards: dict[int, list[SampleRecord]] = defaultdict(list)
        for key, (number, source) in plan.items():
            shards[number] += [r for r in records[key] if r.source == source]
        written = []
        with ThreadPoolExecutor(max(self.workers, self.threads)) as writers:
            # Tars are written in parallel, committed in shard order: a run that stops leaves committed shards up to
            # some number, and the next run's plan continues from there exactly as this one would have.
            for tar in writers.map(partial(_write_tar, dataset=job.dataset, limits=limits), sorted(shards.items())):
                commit_shard(tar, job.dataset)
                written.append(tar.shard)
        return IngestOutcome(written, rejects, found, already_present)

    def _check(self, job: IngestJob) -> tuple[dict[str, list[SampleRecord]], list[Reject], int]:
        """Every candidate checked: records by key, rejects, and how many candidates were found."""
        settings = job.settings
        batches = (batch for src in settings.sources
                   for batch in discover_batches(src, settings.columns, settings.limits, job.scratch))
        records: dict[str, list[SampleRecord]] = defaultdict(list)
        rejects: list[Reject] = []
        progress = Progress("ingest: checked")
        pool, check_one = self._checkers()
        ahead = 4 * max(self.workers, self.threads)
        with pool, ThreadPoolExecutor(1) as reader:
            if self.workers == 1:  # files are read on their own thread (see read_ahead); processes read their own
                batches = ordered_map(reader, partial(read_batch, limits=settings.limits), batches, self.threads)
            checked = ordered_map(pool, partial(check_one, limits=settings.limits), batches, ahead)
            for outcomes in checked:
                for outcome in outcomes:
                    if isinstance(outcome, Reject):
                        rejects.append(outcome)
                    else:
                        records[outcome.key].append(outcome)
                progress.add(len(outcomes))
        return records, rejects, progress.count
