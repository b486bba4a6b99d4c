"""One ``mmindex index`` run: build (or update) the index of every modality a space embedded.

The driver holds the dataset's lock while the in-process executor runs the stage's steps (declared in steps.py:
build, or skip what an ``--update`` finds up to date) and returns a typed report; build.py does the work for one
modality.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from mmindex.dataset.embeddings import EmbeddingStore, Skipped, dataset_space
from mmindex.dataset.lock import exclusive
from mmindex.executors.local import LocalExecutor
from mmindex.index.build import BuildSettings
from mmindex.index.steps import BuiltIndex, declare
from mmindex.index.store import not_embedded
from mmindex.spaces import DEFAULT_SPACE, Space

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


def build_indexes(settings: IndexSettings, space: Space | None = None) -> IndexReport:
    """Builds, or with ``update`` extends, the index of every modality with vectors in the space (``space``: the
    space already resolved)."""
    store = EmbeddingStore.of(settings.dataset, space or dataset_space(settings.dataset, settings.model))
    with exclusive(store.dataset, "index"):
        built = list(LocalExecutor().run(declare(store, settings.build, settings.update)))
    skipped = store.wholly_skipped()
    if not built and skipped:
        raise FileNotFoundError("nothing to index: " + "; and ".join(s.advice() for s in skipped))
    if not built:
        raise FileNotFoundError(f"no vectors in space {store.space.name!r}: run `mmindex embed {settings.dataset} "
                                f"--model {settings.model}` first")
    return IndexReport(store.space.name, settings.build.target_recall, built, not_embedded(store), skipped)
