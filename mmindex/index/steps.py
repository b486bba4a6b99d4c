"""The index stage, declared as steps (see mmindex.stages) and run by the in-process executor.

    IndexFiles (one per modality of the space) -> Build (choose, train, fill, tune, save; or up to date) -> BuiltIndex

Today a modality's index is built whole in one step. A distributed build takes the same shape with more steps:
Train (a Whole step on a bounded sample of the vectors), AddShards (an Each step: one part per embedded shard, on
the workers of any executor), Merge (a Whole step: the parts into on-disk inverted lists) and Tune, so the driver
(run.py) does not change when the steps do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.index.build import BuildSettings, build_index
from mmindex.index.searchable import describe_search
from mmindex.index.store import IndexFiles
from mmindex.stages import Each, Stage


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
    excluded: int = 0         # near-duplicates left out (--exclude-duplicates)

    @classmethod
    def of(cls, files: IndexFiles, info: dict[str, Any], up_to_date: bool = False) -> BuiltIndex:
        return cls(files.modality, files.root, info["vectors"], info["type"], describe_search(info),
                   info["recall_at_10"], info["bytes"], info["build_seconds"], info.get("target_met", True),
                   up_to_date, info.get("excluded", {}).get("vectors", 0))


def build(files: IndexFiles, settings: BuildSettings, update: bool) -> list[BuiltIndex]:
    """The modality's index, built; with ``update``, extended (or found up to date). Nothing without vectors."""
    embedded = files.embeddings.vector_counts(files.modality)
    if not embedded:
        return []
    previous = files.info() if update and files.exists() else None
    as_asked = bool(previous and previous.get("excluded")) or not settings.exclude_duplicates
    if previous is not None and as_asked and files.mismatch(previous) is None:
        return [BuiltIndex.of(files, previous, up_to_date=True)]
    return [BuiltIndex.of(files, build_index(files, settings, update=update))]


def declare(store: EmbeddingStore, settings: BuildSettings, update: bool) -> Stage:
    return Stage("index", [IndexFiles(store, modality) for modality in store.space.modalities()],
                 [Each("Build", partial(build, settings=settings, update=update), IndexFiles)], (BuiltIndex,),
                 store.dataset.scratch_path("index"))
