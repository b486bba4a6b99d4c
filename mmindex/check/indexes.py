"""``mmindex index --check``: every built index of a space, file by file against its record, then id by id
against the embeddings and the samples."""

from __future__ import annotations

from dataclasses import dataclass

from mmindex.check.scan import check_unit
from mmindex.check.units import index_unit
from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.index.built import BuiltIndex
from mmindex.index.run import IndexSettings
from mmindex.index.store import IndexFiles, IndexStale, not_embedded
from mmindex.progress import Progress
from mmindex.spaces import resolve_space


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
