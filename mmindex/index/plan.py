"""What one modality's build does, decided in the driver from counts alone (no vectors, no keys are read).

Nothing, when the space has no vectors of the modality; nothing new, when an ``--update`` finds the index up to
date; else an IndexPlan: the index type, the shards the index holds in id order (with the ids each starts at),
which of them this build adds (all; or with ``--update``, the new ones), and how it is built:

    from parts   an IVF index: trained once on a bounded sample, one part per new shard filled on any worker,
                 the parts merged into one set of inverted lists (parts.py)
    whole        other types (exact search, graphs): filled in one step, as they cannot be merged
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import faiss

from mmindex import storage
from mmindex.dataset import shard_name
from mmindex.dataset.indexes import published
from mmindex.index.built import BuiltIndex
from mmindex.index.choose import choose, training_sample
from mmindex.index.exclusion import Exclusion
from mmindex.index.settings import BuildSettings
from mmindex.index.store import IndexFiles
from mmindex.index.vectors import ShardVectors, shard_vectors
from mmindex.stages import Compact


@dataclass(frozen=True)
class ShardSpan(Compact):
    """One shard's vectors in an index: ids ``first`` to ``first + vectors - 1``."""

    number: int
    first: int
    vectors: int

    @property
    def name(self) -> str:
        return shard_name(self.number)


@dataclass(frozen=True)
class IndexPlan(Compact):
    files: IndexFiles
    settings: BuildSettings
    dim: int
    chosen: dict[str, Any]           # how the type was chosen (info.json's type, lists, chosen_by, bytes_per_vector)
    shards: tuple[ShardSpan, ...]    # every shard of the index, in id order
    new: int                         # shards[new:] are added by this build; those before, by the generations before
    previous: str | None             # the generation an --update extends
    exclusion: str | None            # digest of the near-duplicates left out (None: none are)
    sample: int                      # training vectors (bounded by --max-memory)
    started_at: float                # when the build began, in seconds since the epoch (a worker ends the clock)

    @property
    def factory(self) -> str:
        return self.chosen["type"]

    @property
    def parts(self) -> bool:
        """Whether it is built from parts (an IVF index); else whole."""
        return self.chosen["lists"] > 0

    @property
    def vectors(self) -> int:
        return sum(s.vectors for s in self.shards)

    @property
    def added(self) -> tuple[ShardSpan, ...]:
        return self.shards[self.new:]

    @property
    def work(self) -> str:
        """This build's prefix in the dataset's scratch area: its trained index and parts, which a rerun of the
        same plan (after a crash) reuses; another plan never does."""
        fields = [self.factory, self.dim, [(s.number, s.vectors) for s in self.shards], self.new, self.previous,
                  self.exclusion, self.sample]
        digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]
        return self.files.embeddings.dataset.scratch_path(f"{scratch_prefix(self.files)}{digest}")

    def shard_vectors(self, span: ShardSpan) -> ShardVectors:
        """The shard's vectors as the index holds them (near-duplicates left out), without their keys."""
        return self.shard(span, keys=False)

    def shard(self, span: ShardSpan, keys: bool = True) -> ShardVectors:
        """The shard's vectors (read, not mapped: see vectors.Unmapped) and keys as the index holds them. The keys
        are read only where asked for, or needed to leave near-duplicates out."""
        excluding = self.exclusion is not None
        shard = shard_vectors(self.files.embeddings, span.number, self.files.modality, keys or excluding).unmapped()
        if excluding:
            shard = Exclusion.of(self.files.duplicates, self.files.modality).keep(shard)
        if not keys:
            shard = shard.without_keys()
        if len(shard) != span.vectors:
            raise ValueError(f"shard {span.name}'s {self.files.modality} vectors changed during the build: run the "
                             f"same command again")
        return shard


def lists_on_disk(folder: str) -> bool:
    """Whether an index built from parts keeps its lists in a file of their own: where the dataset is local."""
    return storage.is_local(folder)


def scratch_prefix(files: IndexFiles) -> str:
    return f"index-{files.embeddings.space.name}-{files.modality}-"


def plan(files: IndexFiles, settings: BuildSettings, update: bool) -> list[IndexPlan | BuiltIndex]:
    """The build of one modality: [] without vectors; the published index when an --update finds nothing new;
    else its plan."""
    embedded = files.embeddings.vector_counts(files.modality)
    if not embedded:
        return []
    previous = files.info() if update and files.exists() else None
    if previous is not None:
        files.intact()
    as_asked = bool(previous and previous.get("excluded")) or not settings.exclude_duplicates
    if previous is not None and as_asked and files.mismatch(previous) is None:
        return [BuiltIndex.of(files, previous, up_to_date=True)]
    exclusion = _exclusion(files, settings.exclude_duplicates, previous)
    counts = {name: _kept(files, int(name), exclusion) if exclusion else n for name, n in embedded.items()}
    dim = files.embeddings.vectors(int(next(iter(counts))), files.modality).shape[1]
    order, new = _order(counts, previous)
    shards, first = [], 0
    for name in order:
        shards.append(ShardSpan(int(name), first, counts[name]))
        first += counts[name]
    if previous is not None:
        chosen = {k: previous[k] for k in ("type", "lists", "chosen_by", "bytes_per_vector")}
    else:
        largest_part = max(counts.values()) if lists_on_disk(files.root) else None
        choice = choose(first, dim, settings.max_memory, settings.target_recall, largest_part)
        factory = settings.index_type or choice.factory
        chosen = {"type": factory, "lists": _lists(factory, dim), "chosen_by": "--index-type" if settings.index_type
                  else "auto", "bytes_per_vector": None if settings.index_type else choice.bytes_per_vector}
    sample = training_sample(chosen["lists"], dim, settings.max_memory)
    return [IndexPlan(files, settings, dim, chosen, tuple(shards), new, _published(files) if previous else None,
                      exclusion.digest if exclusion else None, sample, time.time())]


def _published(files: IndexFiles) -> str:
    generation = published(files.root)
    assert generation is not None  # an --update found its info
    return generation.folder


def _order(counts: dict[str, int], previous: dict[str, Any] | None) -> tuple[list[str], int]:
    """The shards in id order (those indexed before first, as they were), and where the new ones start."""
    if previous is None:
        return sorted(counts), 0
    indexed = previous["shards"]
    if any(counts.get(name) != n for name, n in indexed.items()):
        raise ValueError("--update only adds new shards, but indexed shards changed or disappeared (or the "
                         "near-duplicates left out of them did): rebuild without --update")
    new = sorted(set(counts) - set(indexed))
    return [*indexed, *new], len(indexed)


def _kept(files: IndexFiles, number: int, exclusion: Exclusion) -> int:
    return len(exclusion.keep(shard_vectors(files.embeddings, number, files.modality)))


def _lists(factory: str, dim: int) -> int:
    """The IVF lists of an index type (0: not IVF); ValueError, in the user's words, when FAISS cannot build it."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        reason = str(err).rsplit(": ", 1)[-1]
        raise ValueError(f"--index-type {factory!r}: FAISS cannot build it for {dim}-d vectors ({reason})") from None
    try:
        return faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        return 0


def _exclusion(files: IndexFiles, asked: bool, previous: dict | None) -> Exclusion | None:
    """The near-duplicates to leave out: as asked, or with --update, as the index was built."""
    if previous is not None:
        if asked and not previous.get("excluded"):
            raise ValueError("--update extends the index as it was built, near-duplicates included: rebuild "
                             "without --update to leave them out")
        asked = bool(previous.get("excluded"))
    return Exclusion.read(files.embeddings, files.modality) if asked else None
