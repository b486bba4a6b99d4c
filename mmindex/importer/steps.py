"""The import stage, declared as steps (see mmindex.stages): one vector file becomes one dataset shard.

    ImportFile -> ImportShard (check, normalise, write, commit) -> ShardImported

A shard is written as ingest and embed write theirs: its vectors first (checked row by row as they stream; a bad
row stops the file before anything of it is committed), then its tar of metadata members, then its samples parquet
and its embeddings parquet, each with its checksum record. Files are independent, so any executor may run them
in parallel; their shard numbers are fixed by the driver.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmindex.dataset.checksums import Recorder
from mmindex.dataset.embeddings import EmbeddingStore, write_vectors
from mmindex.dataset.layout import shard_name
from mmindex.dataset.samples import samples_bytes
from mmindex.importer.inputs import BadEmbeddings, VectorFile, samples_of, unit_rows
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
        samples = samples_of(file, self.key_column, shard_name(number))
        vectors = store.recorder(number)
        with vectors.writer(store.vectors_path(number, self.modality)) as out:
            write_vectors(out, (file.rows, file.dim), unit_rows(file))
        shard = Recorder(dataset.root, dataset.record_path(number))
        with shard.writer(dataset.shard_path(number)) as out:
            write_tar(out, samples.members)
        shard.commit(dataset.samples_path(number), samples_bytes(samples.rows))
        store.commit_rows(vectors, number, [{"key": key, "modality": self.modality, "row": row, "skipped": None,
                                             "note": None} for row, key in enumerate(samples.keys)])


def declare(store: EmbeddingStore, files: list[ImportFile], modality: str, key_column: str | None) -> Stage:
    return Stage("import", files, [Each("ImportShard", ImportShard(store, modality, key_column), ImportFile,
                                        runs="io")], (ShardImported,), store.dataset.scratch_path("import"))
