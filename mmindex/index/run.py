"""One ``mmindex index`` run: build (or update) the index of every modality a space embedded.

The driver holds the dataset's lock while an executor runs the stage's steps (declared in steps.py) and returns a
typed report: the in-process executor by default, or Beam's (any runner: a Dask cluster with ``--profile dask``),
which builds the same bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mmindex.dataset.embeddings import EmbeddingStore, Skipped, dataset_space
from mmindex.dataset.lock import exclusive
from mmindex.executors.local import LocalExecutor
from mmindex.index.built import BuiltIndex
from mmindex.index.parts import Trained
from mmindex.index.settings import BuildSettings
from mmindex.index.steps import declare, started
from mmindex.index.store import IndexFiles, not_embedded
from mmindex.spaces import DEFAULT_SPACE, Space
from mmindex.stages import Executor

log = logging.getLogger("mmindex")


@dataclass(frozen=True)
class IndexSettings:
    dataset: str
    model: str = DEFAULT_SPACE
    build: BuildSettings = field(default_factory=BuildSettings)
    update: bool = False   # add newly embedded shards without retraining


@dataclass(frozen=True)
class IndexReport:
    space: str
    target_recall: float
    indexes: list[BuiltIndex]
    not_embedded: str | None   # what to run when ingested shards have no embeddings yet
    wholly_skipped: list[Skipped] = field(default_factory=list)  # modalities with no index: every item skipped


def build_indexes(settings: IndexSettings, space: Space | None = None, executor: Executor | None = None
                  ) -> IndexReport:
    """Builds, or with ``update`` extends, the index of every modality with vectors in the space (``space``: the
    space already resolved), on ``executor`` (None: in this process)."""
    store = EmbeddingStore.of(settings.dataset, space or dataset_space(settings.dataset, settings.model))
    indexes = [IndexFiles(store, modality) for modality in store.space.modalities()]
    with exclusive(store.dataset, "index"):
        built = sorted(_run(indexes, settings.build, settings.update, executor),
                       key=lambda b: store.space.modalities().index(b.modality))
    skipped = store.wholly_skipped()
    if not built and skipped:
        raise FileNotFoundError("nothing to index: " + "; and ".join(s.advice() for s in skipped))
    if not built:
        raise FileNotFoundError(f"no vectors in space {store.space.name!r}: run `mmindex embed {settings.dataset} "
                                f"--model {settings.model}` first")
    return IndexReport(store.space.name, settings.build.target_recall, built, not_embedded(store), skipped)


def _run(indexes: list[IndexFiles], settings: BuildSettings, update: bool, executor: Executor | None
         ) -> list[BuiltIndex]:
    """The indexes planned and trained here, their parts made and merged on ``executor``."""
    start = started(indexes, settings, update)
    if not any(isinstance(element, Trained) for element in start):
        return start  # nothing to build: each index is up to date, or has no vectors
    return list((executor or LocalExecutor()).run(declare(indexes, start)))


def build_index(files: IndexFiles, settings: BuildSettings, update: bool = False) -> dict[str, Any]:
    """Builds (or with ``update``, extends) the index of one modality in this process; returns its info."""
    if not _run([files], settings, update, None):
        store = files.embeddings
        raise FileNotFoundError(f"no {files.modality} vectors in space {store.space.name!r}: run `mmindex embed "
                                f"{store.dataset.root} --model {store.space.name}` first")
    return files.info()
