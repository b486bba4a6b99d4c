"""One ``mmindex index`` run: build (or update, or check) the index of every modality a space embedded.

The driver holds the dataset's lock while the in-process executor runs the stage's steps (declared in steps.py:
build, or skip what an ``--update`` finds up to date) and returns a typed report; build.py does the work for one
modality.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mmindex.embed.store import EmbeddingStore
from mmindex.executors.local import LocalExecutor
from mmindex.index.build import BuildSettings
from mmindex.index.steps import BuiltIndex, declare
from mmindex.index.store import IndexFiles, IndexStale, not_embedded
from mmindex.spaces import DEFAULT_SPACE, Space, resolve_space

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


def build_indexes(settings: IndexSettings, space: Space | None = None) -> IndexReport:
    """Builds, or with ``update`` extends, the index of every modality with vectors in the space (``space``: the
    space already resolved)."""
    store = EmbeddingStore.of(settings.dataset, space or resolve_space(settings.model))
    with store.dataset.exclusive("index"):
        built = list(LocalExecutor().run(declare(store, settings.build, settings.update)))
    if not built:
        raise FileNotFoundError(f"no vectors in space {store.space.name!r}: run `mmindex embed {settings.dataset} "
                                f"--model {settings.model}` first")
    return IndexReport(store.space.name, settings.build.target_recall, built, not_embedded(store))


@dataclass(frozen=True)
class IndexCheck:
    checked: list[BuiltIndex]   # every index agrees with the embeddings and the samples
    not_embedded: str | None    # but ingested shards have no embeddings yet: what to run


def check_indexes(settings: IndexSettings) -> IndexCheck:
    """Checks every built index: each file against its recorded size and sha256 and parsed, then id by id against
    the embeddings and the samples; raises IndexStale (saying what to run) at the first problem."""
    store = EmbeddingStore.of(settings.dataset, resolve_space(settings.model))
    built = [files for files in (IndexFiles(store, m) for m in store.space.modalities()) if files.exists()]
    if not built:
        raise FileNotFoundError(f"no index built for space {store.space.name!r}: run `mmindex index "
                                f"{settings.dataset}`")
    from mmindex.check.scan import check_unit
    from mmindex.check.units import index_unit
    from mmindex.progress import Progress

    checked = []
    for files in built:  # every file read against its record and parsed, then compared with the embeddings
        unit = index_unit(files)
        found = check_unit(unit, store.dataset.root, Progress("check"), deep=False).findings if unit else []
        damaged = [f for f in found if f.damaged]
        if damaged:
            raise IndexStale(f"{damaged[0].path} is damaged ({damaged[0].problem}): {files.rebuild}")
        files.check(keys=True)
        checked.append(BuiltIndex.of(files, files.info()))
    return IndexCheck(checked, not_embedded(store))
