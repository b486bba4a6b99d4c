"""The ingest pipeline: raw folders, manifests and webdataset tars -> a dataset of webdataset shards.

    Discover -> Spread -> Inspect -> ChooseWinners (one sample per key, none the dataset holds)
             -> PlanShards -> AssignShard -> WriteShards -> Finalize (rejects parquet, mmindex.json, report)

Run it through ``mmindex ingest`` or directly, on any Beam runner:

    python -m pipelines.ingest --source DIR --dataset OUT [--runner FlinkRunner --flink_master=...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsList, AsSingleton, TaggedOutput

from mmindex import storage
from mmindex.dataset import Dataset, read_parquet
from mmindex.media import Limits, Rejected
from mmindex.progress import Progress
from pipelines.ingest.inspect import inspect_candidate
from pipelines.ingest.plan import DEFAULT_SHARD_SIZE, ShardSize, plan_shards
from pipelines.ingest.records import DUPLICATE, Candidate, Reject, SampleRecord
from pipelines.ingest.sources import ManifestColumns, check_source, discover
from pipelines.ingest.write import finalize, write_shard
from pipelines.options import runner_and_options

log = logging.getLogger("mmindex")


class InspectFn(beam.DoFn):
    """Validates a batch of candidates; bad ones go to the 'rejected' output with a reason, never stopping the run.

    A batch is checked on a few threads: image and audio decoders, hashing and file reads release the GIL,
    so one worker process keeps several cores busy. Output order follows the batch, whatever the threads.
    """

    def __init__(self, limits: Limits, threads: int | None = None):
        self.limits, self.threads = limits, threads

    def setup(self) -> None:
        self.progress = Progress("ingest: checked")
        self.pool = ThreadPoolExecutor(self.threads or min(4, os.cpu_count() or 1))  # the worker's cores

    def teardown(self) -> None:
        self.pool.shutdown()

    def process(self, batch: list[Candidate]):
        for outcome in self.pool.map(self.inspect, batch):
            self.progress.add()
            yield TaggedOutput("rejected", outcome) if isinstance(outcome, Reject) else outcome

    def inspect(self, candidate: Candidate) -> SampleRecord | Reject:
        try:
            return inspect_candidate(candidate, self.limits)
        except Rejected as err:
            return Reject(candidate.source, err.reason, err.detail)
        except Exception as err:  # a decoder's unforeseen failure on hostile bytes must not stop the run
            log.warning("unexpected error on %s", candidate.source, exc_info=True)
            return Reject(candidate.source, "unreadable input", f"{type(err).__name__}: {err}")


def choose_winners(item: tuple[str, dict[str, list]]):
    """Per key: the first source (by name) wins, unless the dataset already holds the key.

    Only (source, sizes) pairs travel here; the records themselves are shuffled once, to their shard.
    """
    key, groups = item
    new: list[tuple[str, list[int]]] = sorted(groups["new"])
    if groups["existing"]:
        for _ in new:
            yield TaggedOutput("already_present", key)
        return
    if new:
        source, sizes = new[0]
        yield key, source, sizes
    for duplicate, _ in new[1:]:
        yield TaggedOutput("rejected", Reject(duplicate, DUPLICATE, f"same content as {new[0][0]}"))


def plan_winners(winners: list[tuple[str, str, list[int]]], first_shard: int, size: ShardSize
                 ) -> dict[str, tuple[int, str]]:
    """Key -> (shard number, winning source)."""
    shards = plan_shards([(key, sizes) for key, _, sizes in winners], first_shard, size)
    return {key: (shards[key], source) for key, source, _ in winners}


def to_shard(record: SampleRecord, plan: dict[str, tuple[int, str]]):
    """(shard, record) for the winning record of each key; losers were counted by choose_winners."""
    shard, source = plan.get(record.key, (None, None))
    if source == record.source:
        yield shard, record


def discover_in_batches(src: str, columns: ManifestColumns, limits: Limits, scratch: str, size: int = 64):
    """Candidates in small batches, so that spreading them over workers costs one shuffle per batch."""
    batch: list[Candidate] = []
    progress = Progress(f"ingest: found in {src}", unit="candidates")
    for candidate in discover(src, columns, limits, scratch):
        batch.append(candidate)
        progress.add()
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
    log.info("ingest: found %s candidate samples in %s", f"{progress.count:,}", src)


def existing_keys(samples_parquet: str) -> list[tuple[str, None]]:
    return [(key, None) for key in read_parquet(samples_parquet, ["key"]).column("key").to_pylist()]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m pipelines.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--source", action="append", required=True, help="folder, manifest, tar or tar glob")
    parser.add_argument("--dataset", required=True, help="dataset folder to create or add to")
    parser.add_argument("--shard-size", default=DEFAULT_SHARD_SIZE, help="samples and/or bytes per shard")
    parser.add_argument("--workers", type=int, default=1, help="processes on this machine (default runner)")
    parser.add_argument("--max-file-bytes", type=int, default=Limits.max_file_bytes)
    parser.add_argument("--max-image-pixels", type=int, default=Limits.max_image_pixels)
    parser.add_argument("--max-text-bytes", type=int, default=Limits.max_text_bytes)
    parser.add_argument("--max-audio-seconds", type=float, default=Limits.max_audio_seconds)
    for column in ("image", "audio", "caption"):
        parser.add_argument(f"--{column}-column", help=f"manifest column with the {column}")
    return parser.parse_known_args(argv)


def manifest_columns(args: argparse.Namespace) -> ManifestColumns:
    default = ManifestColumns()
    return ManifestColumns(**{
        name: ((chosen.lower(),) if (chosen := getattr(args, f"{name}_column")) else getattr(default, name))
        for name in ("image", "audio", "caption")})


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> dict[str, Any]:
    """Runs the ingest; returns the run's report (counts, rejects by reason, shards added)."""
    args, beam_args = parse_args(argv)
    for src in args.source:
        check_source(src)
    if storage.is_local(args.dataset) and os.path.exists(args.dataset) and not os.path.isdir(args.dataset):
        raise ValueError(f"the dataset {args.dataset!r} is a file; give a folder")
    dataset = Dataset(args.dataset)
    dataset.read_metadata()  # refuses a folder of another format before anything is written
    with dataset.exclusive("ingest"):
        return _ingest(args, beam_args, dataset, test_pipeline)


def _ingest(args: argparse.Namespace, beam_args: list[str], dataset: Dataset,
            test_pipeline: beam.Pipeline | None) -> dict[str, Any]:
    shard_size = ShardSize.parse(args.shard_size)
    limits = Limits(args.max_file_bytes, args.max_image_pixels, args.max_text_bytes, args.max_audio_seconds)
    columns = manifest_columns(args)
    removed = dataset.remove_incomplete()
    if removed:
        log.info("removed %d leftovers of an interrupted run", len(removed))
    committed = dataset.committed_shards()
    first_shard = committed[-1] + 1 if committed else 0
    run_id = uuid.uuid4().hex[:12]
    report_path = dataset.scratch_path(f"ingest-{run_id}.json")
    run_info = {"stage": "ingest", "run_id": run_id, "started": time.time(), "sources": args.source,
                "settings": {"shard_size": args.shard_size, "limits": asdict(limits),
                             "manifest_columns": asdict(columns)}}

    runner, options = runner_and_options(beam_args, args.workers)
    pipeline = test_pipeline or beam.Pipeline(runner=runner, options=options)
    with pipeline as p:
        batches = (
            p
            | "Sources" >> beam.Create(args.source)
            | "Discover" >> beam.FlatMap(discover_in_batches, columns, limits, dataset.scratch_path(run_id))
            | "Spread" >> beam.Reshuffle()
        )
        inspected = batches | "Inspect" >> beam.ParDo(InspectFn(limits)).with_outputs("rejected", main="samples")
        existing = (
            p
            | "ExistingShards" >> beam.Create([dataset.samples_path(n) for n in committed])
            | "ExistingKeys" >> beam.FlatMap(existing_keys)
        )
        winners = (
            {"new": inspected.samples | "KeySources" >> beam.Map(lambda r: (r.key, (r.source, r.sizes))),
             "existing": existing}
            | "Join" >> beam.CoGroupByKey()
            | "ChooseWinners" >> beam.FlatMap(choose_winners).with_outputs("rejected", "already_present", main="won")
        )
        plan = (
            winners.won
            | "AllWinners" >> beam.combiners.ToList()
            | "PlanShards" >> beam.Map(plan_winners, first_shard, shard_size)
        )
        shards = (
            inspected.samples
            | "AssignShard" >> beam.FlatMap(to_shard, AsSingleton(plan))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.MapTuple(lambda n, records: write_shard(n, list(records), dataset, limits))
        )
        rejects = (inspected.rejected, winners.rejected) | "AllRejects" >> beam.Flatten()
        _ = (
            p
            | "Once" >> beam.Create([None])
            | "Finalize" >> beam.Map(
                finalize, dataset=dataset, run=run_info, scratch=dataset.scratch_path(run_id),
                recorded=dataset.recorded_rejects(),
                shards=AsList(shards), rejects=AsList(rejects),
                found=AsSingleton(batches | "BatchSizes" >> beam.Map(len) | "CountFound" >> beam.CombineGlobally(sum)),
                already_present=AsSingleton(
                    winners.already_present | "CountPresent" >> beam.combiners.Count.Globally()),
                report_path=report_path)
        )
    report = json.loads(storage.read_bytes(report_path))
    storage.delete([report_path])
    return report
