"""Embedding a dataset with Apache Beam: RunInference runs the space's encoders on any runner.

    python -m pipelines.embed DATASET [--model offline] [--batch-size 64] [--device cpu] [Beam options]

Same encoders, same preparation, the same batches and the same per-shard commits as the local worker pool
(mmindex.embed), so a dataset can be embedded partly on a laptop and partly on a cluster, and the vectors do not
depend on where they were made. Each worker loads the space once; shards already committed are skipped.

    Pending shards -> ListBatches (a shard's batches, as the pool forms them) -> Spread -> Prepare
        -> per modality: RunInference (one prepared batch per element) -> ByShard
        + items that could not be prepared -> GroupByShard -> CommitShard

The batches are formed here, not by RunInference's BatchElements: Beam's DaskRunner drops what a DoFn emits in
finish_bundle, which is where BatchElements emits the last batch of a bundle (see pipelines.options).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from mmindex.dataset import Dataset, shard_name
from mmindex.dataset.embeddings import EmbeddingStore, ShardEmbeddings, ShardSummary
from mmindex.embed.run import EmbedReport, EmbedSettings, OnShard, embed
from mmindex.embed.shard import Chunk, chunks, encode_robustly, prepare_chunk, shard_items
from mmindex.encoders.base import Encoder
from mmindex.media import Rejected
from mmindex.spaces import Space
from pipelines.options import absolute, run_to_completion, runner_and_options

log = logging.getLogger("mmindex")
REJECTED = "rejected"

# An item's place in its shard's results: (shard number, batch number, position in the batch, modality, key).
# Results are committed in this order, which is the worker pool's (modality, then position in the tar).
Ident = tuple[int, int, int, str, str]

_loaded: dict[tuple[str, str], dict[str, Encoder]] = {}


def _encoders(space: Space, device: str, threads: int | None) -> dict[str, Encoder]:
    """The space's encoders, loaded once per worker process (preparation and inference share them).
    ``threads`` (``--threads``) sets the worker's torch threads, as it does the pool's: it changes float rounding."""
    ident = (space.fingerprint, device)
    if ident not in _loaded:
        if threads:
            import torch

            torch.set_num_threads(threads)
        _loaded[ident] = space.load(device)
    return _loaded[ident]


class EncoderHandler(ModelHandler):
    """RunInference's view of one encoder of a space: a prepared batch, [(ident, input)...], per element ->
    (ident, (vector, skipped, note)) per item."""

    def __init__(self, space: Space, modality: str, device: str, threads: int | None):
        super().__init__()
        self.space, self.modality, self.device, self.threads = space, modality, device, threads

    def load_model(self) -> Encoder:
        return _encoders(self.space, self.device, self.threads)[self.modality]

    def should_skip_batching(self) -> bool:
        return True  # each element is already a batch (see the module's docstring)

    def run_inference(self, batch: Sequence[Any], model: Encoder, inference_args=None) -> Iterable[PredictionResult]:
        idents, inputs = zip(*batch, strict=True)
        encoded = encode_robustly(model, list(inputs))
        for i, ident in enumerate(idents):
            skipped = encoded.skipped[i]
            vector = None if skipped or encoded.vectors[i] is None else encoded.vectors[i].copy()
            yield PredictionResult(ident, (vector, skipped, encoded.notes[i]))


class PrepareFn(beam.DoFn):
    """Reads and prepares one batch: (modality, [(ident, input)...]) for the items that have an input, and
    (REJECTED, (shard, (ident, result))) for each that has none, with the reason."""

    def __init__(self, space: Space, device: str, threads: int | None):
        self.space, self.device, self.threads = space, device, threads

    def setup(self) -> None:
        self.preparers = {m: e.preparer() for m, e in _encoders(self.space, self.device, self.threads).items()}

    def process(self, element: tuple[int, int, Chunk]) -> Iterator[tuple[str, Any]]:
        number, batch, chunk = element
        ready = []
        for position, (item, prepared) in enumerate(zip(chunk.items, prepare_chunk(chunk, self.preparers),
                                                        strict=True)):
            ident = (number, batch, position, chunk.modality, item.key)
            if isinstance(prepared, Rejected):
                yield REJECTED, (number, (ident, (None, f"{prepared.reason}: {prepared.detail}", None)))
            else:
                ready.append((ident, prepared))
        if ready:
            yield chunk.modality, ready


def list_batches(number: int, dataset: Dataset, modalities: list[str], batch_size: int) -> Iterator[tuple]:
    """(shard, batch number, batch) for each of a shard's batches, formed as the worker pool forms them."""
    path = dataset.shard_path(number)
    for batch, chunk in enumerate(chunks(path, shard_items(path), modalities, batch_size)):
        yield number, batch, chunk


def commit_shard(element: tuple[int, Iterable], store: EmbeddingStore) -> int:
    """Writes a shard's results in the worker pool's order."""
    number, results = element
    shard = ShardEmbeddings(number)
    for (_, _, _, modality, key), (vector, skipped, note) in sorted((r for r in results if r is not None),
                                                                    key=lambda r: r[0][:3]):
        shard.add(key, modality, vector, skipped, note)
    store.commit(shard)
    return number


def build(pipeline: beam.Pipeline, store: EmbeddingStore, pending: list[int], settings: EmbedSettings) -> None:
    space, dataset, device, threads = store.space, store.dataset, settings.device, settings.threads
    modalities = space.modalities()
    prepared = (pipeline
                | "Pending shards" >> beam.Create(pending)
                | "List batches" >> beam.FlatMap(list_batches, dataset, modalities, settings.batch_size)
                | "Spread batches" >> beam.Reshuffle()
                | "Prepare" >> beam.ParDo(PrepareFn(space, device, threads)))
    results = [prepared
               | "Only rejected" >> beam.Filter(lambda element: element[0] == REJECTED)
               | "Rejected items" >> beam.Map(lambda element: element[1]),
               pipeline | "Every pending shard" >> beam.Create([(n, None) for n in pending])]
    for modality in modalities:
        results.append(
            prepared
            | f"Only {modality}" >> beam.Filter(lambda element, m=modality: element[0] == m)
            | f"Batches ({modality})" >> beam.Map(lambda element: element[1])
            | f"Embed {modality}" >> RunInference(EncoderHandler(space, modality, device, threads))
            | f"By shard ({modality})" >> beam.Map(lambda result: (result.example[0],
                                                                   (result.example, result.inference))))
    _ = (results
         | "All results" >> beam.Flatten()
         | "Group by shard" >> beam.GroupByKey()
         | "Commit shard" >> beam.Map(commit_shard, store))


class BeamExecutor:
    """Embeds the pending shards with RunInference on the runner ``beam_args`` name (default: in-process)."""

    def __init__(self, beam_args: list[str], settings: EmbedSettings, test_pipeline: beam.Pipeline | None = None):
        self.beam_args, self.settings, self.test_pipeline = beam_args, settings, test_pipeline

    def describe(self) -> dict[str, Any]:
        runner = next((a.split("=", 1)[1] for a in self.beam_args if a.startswith("--runner=")), "in-process")
        return {"runner": runner, "device": self.settings.device, "batch_size": self.settings.batch_size}

    def __call__(self, store: EmbeddingStore, pending: list[int], on_shard: OnShard) -> list[str]:
        runner, options = runner_and_options(self.beam_args, self.settings.workers)
        pipeline = self.test_pipeline or beam.Pipeline(runner=runner, options=options)
        build(pipeline, replace(store, dataset=Dataset(absolute(store.dataset.root))), pending, self.settings)
        run_to_completion(pipeline)
        store.remove_incomplete()  # the temporary files of tasks that a cluster ran again after losing a worker
        committed = store.committed()  # the workers wrote them: read back what each holds
        for number in pending:
            on_shard(store.summary(number) if number in committed else
                     ShardSummary(number, failed=f"shard {shard_name(number)} was not committed by the pipeline"))
        return []


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> EmbedReport:
    """Runs the embed on Beam; argv as `mmindex embed` takes it. Returns the run's report."""
    from mmindex.cli import parse
    from mmindex.cli_options import embed_settings

    settings, beam_args = embed_settings(*parse("embed", sys.argv[1:] if argv is None else argv))
    return embed(settings, BeamExecutor(beam_args, settings, test_pipeline))
