"""One ``mmindex index`` run: build (or update) the index of every modality a space embedded.

The driver holds the dataset's lock while it builds, skips an index an ``--update`` finds up to date, and
returns a typed report; build.py does the work for one modality.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.dataset.lock import exclusive
from mmindex.index.build import BuildSettings, build_index
from mmindex.index.searchable import describe_search
from mmindex.index.store import IndexFiles, not_embedded
from mmindex.spaces import DEFAULT_SPACE, Space, resolve_space

log = logging.getLogger("mmindex")


@dataclass(frozen=True)
class IndexSettings:
    dataset: str
    model: str = DEFAULT_SPACE
    build: BuildSettings = field(default_factory=BuildSettings)
    update: bool = False   # add newly embedded shards without retraining


@dataclass(frozen=True)
class BuiltIndex:
    """One modality's index as its info.json records it."""

    modality: str
    root: str
    vectors: int
    type: str
    search: str              # how it is searched: 'exact', 'nprobe=8, re-rank 4x' ...
    recall_at_10: float
    bytes: int
    build_seconds: float
    target_met: bool
    up_to_date: bool = False  # an --update found nothing new: nothing was built

    @classmethod
    def of(cls, files: IndexFiles, info: dict[str, Any], up_to_date: bool = False) -> BuiltIndex:
        return cls(files.modality, files.root, info["vectors"], info["type"], describe_search(info),
                   info["recall_at_10"], info["bytes"], info["build_seconds"], info.get("target_met", True),
                   up_to_date)


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
    built = []
    with exclusive(store.dataset, "index"):
        for modality in store.space.modalities():
            files = IndexFiles(store, modality)
            embedded = store.vector_counts(modality)
            if not embedded:
                continue
            previous = files.info() if settings.update and files.exists() else None
            if previous is not None and previous["shards"] == embedded:
                built.append(BuiltIndex.of(files, previous, up_to_date=True))
                continue
            built.append(BuiltIndex.of(files, build_index(files, settings.build, update=settings.update)))
    if not built:
        raise FileNotFoundError(f"no vectors in space {store.space.name!r}: run `mmindex embed {settings.dataset} "
                                f"--model {settings.model}` first")
    return IndexReport(store.space.name, settings.build.target_recall, built, not_embedded(store))
