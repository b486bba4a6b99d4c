"""The datasets a server holds: for each, its indexed spaces (a warm Searcher each) and its samples by key.

Everything here is loaded once at start. Indexes follow rebuilds: ``searcher()`` picks up a newly published
generation before a search (Searcher.refresh). Samples of shards ingested after start are read when a key is
not found, so new hits get media too.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from mmindex.dataset import Dataset
from mmindex.dataset.embeddings import recorded_spaces
from mmindex.dataset.indexes import PointerDamaged, published
from mmindex.dataset.samples import read_samples, shown
from mmindex.modalities import MODALITIES
from mmindex.search import Searcher
from mmindex.spaces import DEFAULT_SPACE, Space

log = logging.getLogger("mmindex")


class NotFound(LookupError):
    """A dataset, space, sample or member the server does not have; the message says what there is."""


@dataclass(frozen=True)
class Sample:
    id: int                       # the sample's row over all samples parquets in shard order (clip-retrieval's id)
    shard: int
    members: tuple[str, ...]      # extensions of its members in the shard
    caption: str | None           # trimmed
    name: str | None              # its source's file name (dataset.samples.shown): never a path on the server


class ServedDataset:
    def __init__(self, name: str, root: str, device: str = "cpu"):
        self.name, self.root = name, root
        self.dataset = Dataset(root)
        if not self.dataset.exists():
            raise FileNotFoundError(f"--dataset {root}: no mmindex dataset there (run `mmindex ingest ... --out "
                                    f"{root}` first)")
        self.spaces: dict[str, Searcher] = {}
        for space in indexed_spaces(self.dataset):
            searcher = Searcher(root, space, device=device)
            searcher.warm()  # every model loads now, not on a user's first query
            self.spaces[space.name] = searcher
        if not self.spaces:
            raise FileNotFoundError(f"--dataset {root}: nothing indexed yet: run `mmindex embed {root}` and "
                                    f"`mmindex index {root}`")
        self.default_space = DEFAULT_SPACE if DEFAULT_SPACE in self.spaces else sorted(self.spaces)[0]
        self._samples: dict[str, Sample] = {}
        self._keys: list[str] = []   # by sample id
        self._shards: set[int] = set()
        self._reading = threading.Lock()
        self._read_new_shards()

    def searcher(self, space: str | None) -> Searcher:
        """The warm searcher of ``space`` (the dataset's default when None), on the newest published indexes."""
        name = space or self.default_space
        if name not in self.spaces:
            raise NotFound(f"dataset {self.name!r} has no indexed space {name!r} (it has {', '.join(self.spaces)})")
        searcher = self.spaces[name]
        searcher.refresh()
        return searcher

    def sample(self, key: str) -> Sample:
        found = self._samples.get(key)
        if found is None and self._read_new_shards():
            found = self._samples.get(key)
        if found is None:
            raise NotFound(f"dataset {self.name!r} has no sample with key {key!r}")
        return found

    def key_of(self, sample_id: int) -> str:
        """The key of the sample with clip-retrieval's ``id``."""
        if not 0 <= sample_id < len(self._keys):
            raise NotFound(f"dataset {self.name!r} has no sample with id {sample_id}")
        return self._keys[sample_id]

    def _read_new_shards(self) -> bool:
        """Reads the samples of shards committed since the last read; whether there were any."""
        with self._reading:
            new = [n for n in self.dataset.committed_shards() if n not in self._shards]
            for number in sorted(new):
                columns = ["key", "members", "caption", "source"]
                for row in read_samples(self.dataset.samples_path(number), columns=columns).to_pylist():
                    self._samples[row["key"]] = Sample(len(self._keys), number, tuple(row["members"]),
                                                       **shown(row["caption"], row["source"]))
                    self._keys.append(row["key"])
                self._shards.add(number)
            return bool(new)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "samples": len(self._samples), "default_space": self.default_space,
                "spaces": [space_info(searcher) for searcher in self.spaces.values()]}


def space_info(searcher: Searcher) -> dict[str, Any]:
    space = searcher.store.space
    indexes = [{"modality": modality, "count": loaded.index.ntotal, "type": loaded.info.get("type"),
                "recall": loaded.info.get("recall_at_10"), "target_recall": loaded.info.get("target_recall")}
               for modality, loaded in searcher.indexes.items()]
    return {"name": space.name, "description": space.settings.get("description"),
            "query_modalities": space.modalities(), "indexes": indexes,
            "damaged": [{"modality": modality, "problem": problem} for modality, problem in searcher.damaged.items()]}


def indexed_spaces(dataset: Dataset) -> list[Space]:
    """The spaces with at least one published index (or one whose CURRENT is damaged: the searcher says so, and
    serves the others), as their embeddings recorded them (space.json)."""
    def indexed(space: Space, modality: str) -> bool:
        try:
            return published(dataset.index_path(space.name, modality)) is not None
        except PointerDamaged:
            return True

    return [space for space in recorded_spaces(dataset) if any(indexed(space, m) for m in MODALITIES)]


def load_catalog(datasets: dict[str, str], device: str = "cpu") -> dict[str, ServedDataset]:
    return {name: ServedDataset(name, root, device) for name, root in datasets.items()}


def pick(catalog: dict[str, ServedDataset], name: str | None) -> ServedDataset:
    """The dataset a request names, or the first one served."""
    if name is None:
        return next(iter(catalog.values()))
    if name not in catalog:
        raise NotFound(f"no dataset {name!r} is served (served: {', '.join(catalog)})")
    return catalog[name]

