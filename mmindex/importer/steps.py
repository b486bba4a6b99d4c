"""The import stage, declared as steps (see mmindex.stages): one vector file becomes one dataset shard.

    ImportFile -> ImportShard (check, normalise, write, commit) -> ShardImported

A shard is written as ingest and embed write theirs: its vectors first (checked row by row as they stream; a bad
row stops the file before anything of it is committed), then its tar of metadata members, then its samples parquet
and its embeddings parquet, each with its checksum record. Files are independent, so any executor may run them
in parallel; their shard numbers are fixed by the driver.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex.dataset.checksums import Recorder
from mmindex.dataset.embeddings import EmbeddingStore, write_vectors
from mmindex.dataset.layout import shard_name
from mmindex.dataset.samples import SAMPLES_SCHEMA, samples_writer
from mmindex.importer.inputs import BadEmbeddings, ImportedSamples, VectorFile, keys_of, samples_of, unit_rows
from mmindex.stages import Each, Stage
from mmindex.webdataset import write_tar


@dataclass(frozen=True)
class ImportFile:
    number: int         # the dataset shard it becomes
    file: VectorFile


@dataclass(frozen=True)
class ShardImported:
    """What one file became: a committed shard of ``rows`` samples, or why nothing of it was committed."""

    number: int
    source: str
    rows: int = 0
    failed: str | None = None


class ImportShard:
    def __init__(self, store: EmbeddingStore, modality: str, key_column: str | None):
        self.store, self.modality, self.key_column = store, modality, key_column

    def __call__(self, element: ImportFile) -> list[ShardImported]:
        file, number = element.file, element.number
        try:
            self.write(file, number)
        except BadEmbeddings as err:  # a bad file is refused alone: the others are imported
            return [ShardImported(number, file.path, failed=str(err))]
        return [ShardImported(number, file.path, file.rows)]

    def write(self, file: VectorFile, number: int) -> None:
        store, dataset = self.store, self.store.dataset
        keys = keys_of(file, self.key_column)
        vectors = store.recorder(number)
        with vectors.writer(store.vectors_path(number, self.modality)) as out:
            write_vectors(out, (file.rows, file.dim), unit_rows(file))
        shard = Recorder(dataset.root, dataset.record_path(number))
        samples = io.BytesIO()  # the samples parquet commits the shard, so it is written last, whole
        with shard.writer(dataset.shard_path(number)) as out, samples_writer(samples) as rows:
            write_tar(out, _members(samples_of(file, keys, self.key_column, shard_name(number)), rows))
        shard.commit(dataset.samples_path(number), samples.getvalue())
        store.commit_rows(vectors, number, {"key": keys, "modality": [self.modality] * len(keys),
                                            "row": list(range(len(keys))), "skipped": [None] * len(keys),
                                            "note": [None] * len(keys)})


def _members(batches: Iterator[ImportedSamples], rows: pq.ParquetWriter) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The tar's members, batch by batch; each batch's samples parquet rows written as it passes."""
    for batch in batches:
        rows.write_table(pa.Table.from_pylist(batch.rows, schema=SAMPLES_SCHEMA))
        yield from batch.members


def declare(store: EmbeddingStore, files: list[ImportFile], modality: str, key_column: str | None) -> Stage:
    return Stage("import", files, [Each("ImportShard", ImportShard(store, modality, key_column), ImportFile,
                                        runs="io")], (ShardImported,), store.dataset.scratch_path("import"))
