"""Embedding a dataset with Apache Beam: RunInference runs the space's encoders on any runner.

    python -m pipelines.embed DATASET [--model offline] [--batch-size 64] [--device cpu] [Beam options]

Same encoders, same preparation and the same per-shard commits as the local worker pool (mmindex.embed),
so a dataset can be embedded partly on a laptop and partly on a cluster. Each worker loads the space once;
shards already committed are skipped.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference

from mmindex.dataset import Dataset, shard_name
from mmindex.embed.run import EmbedReport, EmbedSettings, OnShard, embed
from mmindex.embed.shard import Chunk, Item, encode_robustly, prepare_chunk, shard_items
from mmindex.embed.store import EmbeddingStore, ShardEmbeddings, ShardSummary
from mmindex.encoders.base import Encoder
from mmindex.media import Rejected
from mmindex.spaces import Space
from pipelines.failures import worker_errors
from pipelines.options import runner_and_options

log = logging.getLogger("mmindex")
REJECTED = "rejected"


_loaded: dict[tuple[str, str], dict[str, Encoder]] = {}


def _encoders(space: Space, device: str) -> dict[str, Encoder]:
    """The space's encoders, loaded once per worker process (preparation and inference share them)."""
    ident = (space.fingerprint, device)
    if ident not in _loaded:
        _loaded[ident] = space.load(device)
    return _loaded[ident]


class EncoderHandler(ModelHandler):
    """RunInference's view of one encoder of a space: batches of prepared items -> (vector, skipped, note)."""

    def __init__(self, space: Space, modality: str, device: str, batch_size: int):
        super().__init__()
        self.space, self.modality, self.device, self.batch_size = space, modality, device, batch_size

    def load_model(self) -> Encoder:
        return _encoders(self.space, self.device)[self.modality]

    def run_inference(self, batch: Sequence[Any], model: Encoder, inference_args=None) -> Iterable[PredictionResult]:
        encoded = encode_robustly(model, list(batch))
        for i, example in enumerate(batch):
            vector = encoded.vectors[i]
            yield PredictionResult(example, (None if vector is None else vector.copy(), encoded.skipped[i],
                                             encoded.notes[i]))

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": 1, "max_batch_size": self.batch_size}


class PrepareFn(beam.DoFn):
    """Reads and prepares one item: main output ((shard, position, key), input), or the reason it has none."""

    def __init__(self, space: Space, device: str):
        self.space, self.device = space, device

    def setup(self) -> None:
        self.preparers = {m: e.preparer() for m, e in _encoders(self.space, self.device).items()}

    def process(self, element: tuple[int, str, int, Item]) -> Iterator:
        number, path, position, item = element
        (prepared,) = prepare_chunk(Chunk(path, item.modality, [item]), self.preparers)
        ident = (number, item.modality, position, item.key)
        if isinstance(prepared, Rejected):
            yield beam.pvalue.TaggedOutput(REJECTED, (number, (ident, (None, f"{prepared.reason}: {prepared.detail}",
                                                                       None))))
        else:
            yield ident, prepared


def list_items(number: int, dataset: Dataset, modalities: list[str]) -> Iterator[tuple[int, str, int, Item]]:
    path = dataset.shard_path(number)
    for position, item in enumerate(shard_items(path)):
        if item.modality in modalities:
            yield number, path, position, item


def commit_shard(element: tuple[int, Iterable], store: EmbeddingStore) -> int:
    """Writes a shard's results in the worker pool's order (modality, then position in the tar)."""
    number, results = element
    shard = ShardEmbeddings(number)
    for (_, modality, _, key), (vector, skipped, note) in sorted((r for r in results if r is not None),
                                                                 key=lambda r: r[0][1:3]):
        shard.add(key, modality, vector, skipped, note)
    store.commit(shard)
    return number


def build(pipeline: beam.Pipeline, store: EmbeddingStore, pending: list[int], device: str,
          batch_size: int) -> beam.PCollection:
    space, dataset = store.space, store.dataset
    modalities = space.modalities()
    prepared = (pipeline
                | "Pending shards" >> beam.Create(pending)
                | "List items" >> beam.FlatMap(list_items, dataset, modalities)
                | "Spread items" >> beam.Reshuffle()
                | "Prepare" >> beam.ParDo(PrepareFn(space, device)).with_outputs(REJECTED, main="ready"))
    results = [prepared[REJECTED],
               pipeline | "Every pending shard" >> beam.Create([(n, None) for n in pending])]
    for modality in modalities:
        results.append(
            prepared.ready
            | f"Only {modality}" >> beam.Filter(lambda element, m=modality: element[0][1] == m)
            | f"Embed {modality}" >> RunInference(KeyedModelHandler(EncoderHandler(space, modality, device,
                                                                                   batch_size)))
            | f"By shard ({modality})" >> beam.Map(lambda kv: (kv[0][0], (kv[0], kv[1].inference))))
    return (results
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
        build(pipeline, store, pending, self.settings.device, self.settings.batch_size)
        with worker_errors():
            pipeline.run().wait_until_finish()
        committed = store.committed()  # the workers wrote them: read back what each holds
        for number in pending:
            on_shard(store.summary(number) if number in committed else
                     ShardSummary(number, failed=f"shard {shard_name(number)} was not committed by the pipeline"))
        return []


def run(argv: list[str] | None = None, test_pipeline: beam.Pipeline | None = None) -> EmbedReport:
    """Runs the embed on Beam; argv as `mmindex embed` takes it. Returns the run's report."""
    from mmindex.cli import embed_settings, parse

    settings, beam_args = embed_settings(*parse("embed", sys.argv[1:] if argv is None else argv))
    return embed(settings, BeamExecutor(beam_args, settings, test_pipeline))
