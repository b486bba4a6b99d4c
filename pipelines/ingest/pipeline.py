"""The ingest job as a Beam pipeline, for clusters: the steps of mmindex.ingest, wired with labelled transforms.

    Discover -> Spread -> Check -> ChooseWinners (one sample per key, none the dataset holds)
             -> PlanShards -> AssignShard -> WriteShards -> Outcome

Run it through ``mmindex ingest --runner=...`` (or ``--profile``), or directly on any Beam runner:

    python -m pipelines.ingest SRC... --out DATASET [--runner=FlinkRunner --flink_master=...]

The driver (mmindex.ingest.run) locks the dataset, writes the rejects and records the run; this pipeline only
writes shards. Its workers share nothing with the driver but the dataset's storage, so the outcome comes
back as a small file in the dataset's scratch area.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsList, AsSingleton, TaggedOutput

from mmindex import storage
from mmindex.dataset import sample_keys
from mmindex.ingest.discover import discover_batches
from mmindex.ingest.plan import choose_winner, plan_winners
from mmindex.ingest.records import IngestOutcome, Reject, SampleRecord, ShardWritten
from mmindex.ingest.run import IngestJob, IngestReport, ingest
from mmindex.ingest.validate import check
from mmindex.ingest.write import write_shard
from mmindex.media import Limits
from mmindex.progress import Progress
from pipelines.failures import worker_errors
from pipelines.options import runner_and_options


class CheckFn(beam.DoFn):
    """Checks a batch of candidates on a few threads (decoders and hashing release the GIL); bad ones go to
    the 'rejected' output with a reason. The pool is made per worker in setup: a DoFn must pickle."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def setup(self) -> None:
        self.progress = Progress("ingest: checked")
        self.pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1))

    def teardown(self) -> None:
        self.pool.shutdown()

    def process(self, batch: list):
        for outcome in self.pool.map(check, batch, [self.limits] * len(batch)):
            self.progress.add()
            yield TaggedOutput("rejected", outcome) if isinstance(outcome, Reject) else outcome


def choose_winners(item: tuple[str, dict[str, list]]):
    key, groups = item
    winner, duplicates, held = choose_winner(key, groups["new"], bool(groups["existing"]))
    for _ in range(held):
        yield TaggedOutput("already_present", key)
    for duplicate in duplicates:
        yield TaggedOutput("rejected", duplicate)
    if winner:
        yield winner


def to_shard(record: SampleRecord, plan: dict[str, tuple[int, str]]):
    """(shard, record) for the winning record of each key; losers were counted by choose_winners."""
    shard, source = plan.get(record.key, (None, None))
    if source == record.source:
        yield shard, record


def existing_keys(samples_parquet: str) -> list[tuple[str, None]]:
    return [(key, None) for key in sample_keys(samples_parquet)]


def write_outcome(_: Any, path: str, shards: list[ShardWritten], rejects: list[Reject], found: int,
                  already_present: int) -> None:
    outcome = IngestOutcome(shards, rejects, found, already_present)
    storage.write_atomic(path, json.dumps(asdict(outcome)).encode())


def read_outcome(path: str) -> IngestOutcome:
    data = json.loads(storage.read_bytes(path))
    storage.delete([path])
    return IngestOutcome([ShardWritten(**s) for s in data["shards"]], [Reject(**r) for r in data["rejects"]],
                         data["found"], data["already_present"])


def build(p: beam.Pipeline, job: IngestJob, outcome_path: str) -> None:
    settings, dataset = job.settings, job.dataset
    limits = settings.limits
    batches = (p
               | "Sources" >> beam.Create(list(settings.sources))
               | "Discover" >> beam.FlatMap(discover_batches, settings.columns, limits, job.scratch)
               | "Spread" >> beam.Reshuffle())
    checked = batches | "Check" >> beam.ParDo(CheckFn(limits)).with_outputs("rejected", main="samples")
    existing = (p
                | "ExistingShards" >> beam.Create(job.existing)
                | "ExistingKeys" >> beam.FlatMap(existing_keys))
    winners = ({"new": checked.samples | "KeySources" >> beam.Map(lambda r: (r.key, (r.source, r.sizes))),
                "existing": existing}
               | "Join" >> beam.CoGroupByKey()
               | "ChooseWinners" >> beam.FlatMap(choose_winners).with_outputs("rejected", "already_present",
                                                                            main="won"))
    plan = (winners.won
            | "AllWinners" >> beam.combiners.ToList()
            | "PlanShards" >> beam.Map(plan_winners, job.first_shard, job.shard_size))
    shards = (checked.samples
              | "AssignShard" >> beam.FlatMap(to_shard, AsSingleton(plan))
              | "GroupShards" >> beam.GroupByKey()
              | "WriteShards" >> beam.MapTuple(lambda n, records: write_shard(n, list(records), dataset, limits)))
    rejects = (checked.rejected, winners.rejected) | "AllRejects" >> beam.Flatten()
    _ = (p
         | "Once" >> beam.Create([None])
         | "Outcome" >> beam.Map(
             write_outcome, path=outcome_path, shards=AsList(shards), rejects=AsList(rejects),
             found=AsSingleton(batches | "BatchSizes" >> beam.Map(len) | "CountFound" >> beam.CombineGlobally(sum)),
             already_present=AsSingleton(winners.already_present | "CountPresent" >> beam.combiners.Count.Globally())))


class BeamExecutor:
    """Runs an ingest job as a Beam pipeline: on the runner ``beam_args`` name, else Beam's in-process runner."""

    def __init__(self, beam_args: list[str], test_pipeline: beam.Pipeline | None = None):
        self.beam_args, self.test_pipeline = beam_args, test_pipeline

    def __call__(self, job: IngestJob) -> IngestOutcome:
        runner, options = runner_and_options(self.beam_args, job.settings.workers)
        pipeline = self.test_pipeline or beam.Pipeline(runner=runner, options=options)
        outcome_path = f"{job.scratch}-outcome.json"
        build(pipeline, job, outcome_path)
        with worker_errors():
            pipeline.run().wait_until_finish()
        return read_outcome(outcome_path)


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> IngestReport:
    """Runs the ingest on Beam; argv as `mmindex ingest` takes it. Returns the run's report."""
    from mmindex.cli import ingest_settings, parse

    settings, beam_args = ingest_settings(parse("ingest", sys.argv[1:] if argv is None else argv)[0])
    return ingest(settings, BeamExecutor(beam_args, test_pipeline))
