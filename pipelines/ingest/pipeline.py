"""The ingest job as a Beam pipeline, for clusters: the steps of mmindex.ingest, wired with labelled transforms.

    Discover -> Spread -> Check -> Join (with the keys the dataset holds) -> ChooseWinners (one sample per key)
             -> PlanShards (all winners in one group) -> JoinPlan (each record meets its shard)
             -> GroupShards -> WriteShards
    every fact the driver needs (shards written, rejects, counts) -> Outcome

Run it through ``mmindex ingest --runner=...`` (or ``--profile``), or directly on any Beam runner:

    python -m pipelines.ingest SRC... --out DATASET [--runner=FlinkRunner --flink_master=...]

The driver (mmindex.ingest.run) locks the dataset, writes the rejects and records the run; this pipeline only
writes shards. Its workers share nothing with the driver but the dataset's storage, so the outcome comes
back as a small file in the dataset's scratch area.

The shape is one that every runner runs, Beam's DaskRunner included (see pipelines.options): no side inputs,
no multi-output ParDo (a step's outputs are told apart by their type), joins by CoGroupByKey, and a single
sink, Outcome, applied last, which every other branch flows into.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import apache_beam as beam

from mmindex import storage
from mmindex.dataset import Dataset
from mmindex.dataset.samples import sample_keys
from mmindex.ingest.discover import discover_batches
from mmindex.ingest.plan import ShardSize, Winner, choose_winner, plan_winners
from mmindex.ingest.records import IngestOutcome, Reject, SampleRecord, ShardWritten
from mmindex.ingest.run import IngestJob, IngestReport, ingest
from mmindex.ingest.validate import check
from mmindex.ingest.write import write_shard
from mmindex.media import Limits
from mmindex.progress import Progress
from pipelines.options import absolute, run_to_completion, runner_and_options


@dataclass(frozen=True)
class Counted:
    """A count for the outcome: candidates found, or candidates whose content the dataset already held."""

    what: str  # "found" or "already_present"
    n: int


class CheckFn(beam.DoFn):
    """Checks a batch of candidates on a few threads (decoders and hashing release the GIL): a SampleRecord, or
    a Reject with a reason, for each. The pool is made per worker in setup: a DoFn must pickle."""

    def __init__(self, limits: Limits):
        self.limits = limits

    def setup(self) -> None:
        self.progress = Progress("ingest: checked")
        self.pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1))

    def teardown(self) -> None:
        self.pool.shutdown()

    def process(self, batch: list) -> Iterator[SampleRecord | Reject]:
        for outcome in self.pool.map(check, batch, [self.limits] * len(batch)):
            self.progress.add()
            yield outcome


def choose_winners(item: tuple[str, dict[str, list]]) -> Iterator[Winner | Reject | Counted]:
    key, groups = item
    winner, duplicates, held = choose_winner(key, groups["new"], bool(groups["existing"]))
    if held:
        yield Counted("already_present", held)
    yield from duplicates
    if winner:
        yield winner


def plan_entries(group: tuple[None, Iterable[Winner]], first_shard: int, size: ShardSize) -> Iterator[tuple]:
    """(key, (shard number, winning source)) for every winner: the plan needs them all at once."""
    yield from plan_winners(list(group[1]), first_shard, size).items()


def to_shard(item: tuple[str, dict[str, list]]) -> Iterator[tuple[int, SampleRecord]]:
    """(shard, record) for the winning record of a key; losers were counted by choose_winners."""
    _, groups = item
    for shard, source in groups["plan"]:
        for record in groups["record"]:
            if record.source == source:
                yield shard, record


def existing_keys(samples_parquet: str) -> list[tuple[str, None]]:
    return [(key, None) for key in sample_keys(samples_parquet)]


def write_outcome(group: tuple[None, Iterable[ShardWritten | Reject | Counted]], path: str) -> None:
    facts = list(group[1])
    counts = {"found": 0, "already_present": 0}
    for fact in facts:
        if isinstance(fact, Counted):
            counts[fact.what] += fact.n
    outcome = IngestOutcome(sorted((f for f in facts if isinstance(f, ShardWritten)), key=lambda s: s.name),
                            [f for f in facts if isinstance(f, Reject)], counts["found"], counts["already_present"])
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
    checked = batches | "Check" >> beam.ParDo(CheckFn(limits))
    samples = checked | "Samples" >> beam.Filter(isinstance, SampleRecord)
    existing = (p
                | "ExistingShards" >> beam.Create(job.existing)
                | "ExistingKeys" >> beam.FlatMap(existing_keys))
    choices = ({"new": samples | "KeySources" >> beam.Map(lambda r: (r.key, (r.source, r.sizes))),
                "existing": existing}
               | "Join" >> beam.CoGroupByKey()
               | "ChooseWinners" >> beam.FlatMap(choose_winners))
    plan = (choices
            | "Winners" >> beam.Filter(isinstance, tuple)  # a Winner is a tuple; Reject and Counted are not
            | "OneGroup" >> beam.Map(lambda winner: (None, winner))
            | "AllWinners" >> beam.GroupByKey()
            | "PlanShards" >> beam.FlatMap(plan_entries, job.first_shard, job.shard_size))
    # The plan reaches each record by a join on its key rather than as a side input: records are small
    # (bytes travel by reference, see mmindex.ingest.records), so a second shuffle costs little.
    shards = ({"record": samples | "KeyRecords" >> beam.Map(lambda r: (r.key, r)), "plan": plan}
              | "JoinPlan" >> beam.CoGroupByKey()
              | "AssignShard" >> beam.FlatMap(to_shard)
              | "GroupShards" >> beam.GroupByKey()
              | "WriteShards" >> beam.MapTuple(lambda n, records: write_shard(n, list(records), dataset, limits)))
    facts = (p | "Start" >> beam.Create([Counted("found", 0)]),  # so that Outcome runs when nothing is found
             batches | "CountFound" >> beam.Map(lambda batch: Counted("found", len(batch))),
             checked | "Rejected" >> beam.Filter(isinstance, Reject),
             choices | "DuplicatesAndHeld" >> beam.Filter(isinstance, (Reject, Counted)),
             shards)
    _ = (facts
         | "Facts" >> beam.Flatten()
         | "Gather" >> beam.Map(lambda fact: (None, fact))
         | "AllFacts" >> beam.GroupByKey()
         | "Outcome" >> beam.Map(write_outcome, outcome_path))


def on_workers(job: IngestJob) -> IngestJob:
    """The job with local paths made absolute: a cluster's workers do not run in the driver's folder."""
    settings = replace(job.settings, sources=tuple(map(absolute, job.settings.sources)),
                       dataset=absolute(job.settings.dataset))
    return replace(job, settings=settings, dataset=Dataset(absolute(job.dataset.root)),
                   existing=list(map(absolute, job.existing)), scratch=absolute(job.scratch))


class BeamExecutor:
    """Runs an ingest job as a Beam pipeline: on the runner ``beam_args`` name, else Beam's in-process runner."""

    def __init__(self, beam_args: list[str], test_pipeline: beam.Pipeline | None = None):
        self.beam_args, self.test_pipeline = beam_args, test_pipeline

    def __call__(self, job: IngestJob) -> IngestOutcome:
        job = on_workers(job)
        runner, options = runner_and_options(self.beam_args, job.settings.workers)
        pipeline = self.test_pipeline or beam.Pipeline(runner=runner, options=options)
        outcome_path = f"{job.scratch}-outcome.json"
        build(pipeline, job, outcome_path)
        run_to_completion(pipeline)
        outcome = read_outcome(outcome_path)
        job.dataset.remove_incomplete()  # the temporary files of tasks that a cluster ran again after losing a worker
        return outcome


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> IngestReport:
    """Runs the ingest on Beam; argv as `mmindex ingest` takes it. Returns the run's report."""
    from mmindex.cli import parse
    from mmindex.cli_options import ingest_settings

    settings, beam_args = ingest_settings(parse("ingest", sys.argv[1:] if argv is None else argv)[0])
    return ingest(settings, BeamExecutor(beam_args, test_pipeline))
