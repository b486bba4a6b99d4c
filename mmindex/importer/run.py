"""One ``mmindex import`` run: the driver.

It pairs the vector files with their metadata and checks every header and footer before it writes anything, so
a wrong dtype, dimension, row count or a truncated file refuses the whole import in one line that names the
file. It then resolves the space (a preset, whose text encoder embeds queries, or a new name: a space of
vectors only, its dimension taken from the files), locks the dataset, and has an executor import each file that
is not in the dataset yet as one shard (steps.py). A file is known by its path: a repeat does nothing, new files
are added as new shards, and a file whose shard was committed without its embeddings (a run killed in between)
is imported again into the same shard.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field

from mmindex import storage
from mmindex.dataset import Dataset
from mmindex.dataset.embeddings import EmbeddingStore, dataset_space
from mmindex.dataset.lock import exclusive
from mmindex.dataset.runs import record_run
from mmindex.dataset.samples import first_source
from mmindex.dataset.sources import ROW, source_file
from mmindex.executors.local import LocalExecutor
from mmindex.importer.inputs import BadEmbeddings, VectorFile, paired, vector_file
from mmindex.importer.steps import ImportFile, ShardImported, declare
from mmindex.modalities import MODALITIES
from mmindex.spaces import Space, vectors_space
from mmindex.stages import Executor

SPACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")   # a vectors-only space's name is a folder's name


@dataclass(frozen=True)
class ImportSettings:
    embeddings: tuple[str, ...]          # .npy files and folders of them
    dataset: str
    model: str                           # a space (preset, YAML, model), or a new name: vectors only
    modality: str = "image"
    metadata: tuple[str, ...] = ()       # parquet files and folders, paired with the .npy files by number
    key_column: str | None = None        # None: keys from the file's name and the row

    def __post_init__(self) -> None:
        if not self.embeddings:
            raise ValueError("give at least one .npy file or folder of them to import")
        if self.modality not in MODALITIES:
            raise ValueError(f"--modality {self.modality!r}: choose {', '.join(MODALITIES)}")


@dataclass
class ImportReport:
    root: str
    space: str
    dim: int
    vectors_only: bool                   # no encoder: queried by vector only
    files: int                           # vector files given
    already: int                         # of them, imported before
    imported: list[ShardImported] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(shard.rows for shard in self.imported)

    def add(self, shard: ShardImported) -> None:
        if shard.failed:
            self.failures.append(shard.failed)
        else:
            self.imported.append(shard)


def import_embeddings(settings: ImportSettings, executor: Executor | None = None) -> ImportReport:
    files = [vector_file(path, metadata, settings.key_column)
             for path, metadata in paired(settings.embeddings, settings.metadata)]
    for file in files[1:]:
        if file.dim != files[0].dim:
            raise BadEmbeddings(f"{file.path}: {file.dim}-d vectors, but {files[0].path} holds {files[0].dim}-d ones")
    dataset = Dataset(settings.dataset)
    store = EmbeddingStore(dataset, import_space(settings, files[0]))
    fresh = storage.is_local(dataset.root) and not os.path.exists(dataset.root)
    with exclusive(dataset, "import"):
        dataset.remove_incomplete()
        store.remove_incomplete()
        shards, embedded = imported_files(dataset), store.committed()
        todo = [f for f in files if shards.get(f.path) not in embedded]
        report = ImportReport(dataset.root, store.space.name, files[0].dim, store.space.settings["kind"] == "vectors",
                              len(files), len(files) - len(todo))
        if todo:
            store.claim()
            started = time.time()
            for fact in (executor or LocalExecutor()).run(declare(store, numbered(dataset, todo, shards),
                                                                  settings.modality, settings.key_column)):
                report.add(fact)
            if report.imported:
                record_run(dataset, {"stage": "import", "started": started, "finished": time.time(),
                                     "settings": asdict(settings), "sources": [s.source for s in report.imported],
                                     "counts": {"files": len(report.imported), "vectors": report.rows}},
                           [s.source for s in report.imported])
    if fresh and not report.imported:  # a dataset this run created, with nothing in it: nothing is left
        storage.delete([dataset.root])
    return report


def import_space(settings: ImportSettings, first: VectorFile) -> Space:
    """The space the vectors join: one ``--model`` resolves to (with the dataset's own), else a new space of
    vectors only; refused if its vectors have another dimension or it cannot hold the modality."""
    try:
        space = dataset_space(settings.dataset, settings.model)
    except FileNotFoundError:
        if not SPACE_NAME.fullmatch(settings.model):
            raise
        space = vectors_space(settings.model, first.dim)
    if space.settings["kind"] not in ("huggingface", "vectors"):
        raise ValueError(f"--model {settings.model}: import takes a CLIP, SigLIP or CLAP space (whose text encoder "
                         f"then embeds queries), or a new name for a space of vectors only")
    if space.dimension() != first.dim:
        raise BadEmbeddings(f"{first.path}: {first.dim}-d vectors, but space {space.name!r} holds "
                            f"{space.dimension()}-d ones")
    if settings.modality not in space.modalities():
        raise ValueError(f"--modality {settings.modality}: space {space.name!r} holds "
                         f"{' and '.join(space.modalities())} vectors")
    return space


def imported_files(dataset: Dataset) -> dict[str, int]:
    """The shard each vector file became (by its path), from the committed samples: an imported shard's samples
    all come from rows of one file."""
    found = {}
    for number in dataset.committed_shards():
        source = first_source(dataset.samples_path(number)) or ""
        if ROW in source and source_file(source).endswith(".npy"):
            found[source_file(source)] = number
    return found


def numbered(dataset: Dataset, todo: list[VectorFile], shards: dict[str, int]) -> list[ImportFile]:
    """Each file with its shard: the one it had (its embeddings were never committed), else the next new one."""
    following = max([*dataset.committed_shards(), *dataset.recorded_shards()], default=-1) + 1
    elements = []
    for file in todo:
        if file.path in shards:
            elements.append(ImportFile(shards[file.path], file))
        else:
            elements.append(ImportFile(following, file))
            following += 1
    return elements
