"""Where every file of a dataset lives (local or on any Beam file system), and which shards are committed.

A shard is committed when its samples parquet exists: the tar is renamed into place first, then the
parquet, so a tar without a parquet is the leftover of an interrupted run and is removed by the next.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from mmindex import storage
from mmindex.dataset.checksums import unit_problem

SHARD_DIGITS = 6


def shard_name(number: int) -> str:
    return f"{number:0{SHARD_DIGITS}d}"


def numbered(pattern: str) -> list[int]:
    """The numbers of the files matching ``pattern`` whose names are numbers (``000007.parquet``), sorted."""
    stems = (posixpath.basename(path).rsplit(".", 1)[0] for path in storage.glob(pattern))
    return sorted(int(stem) for stem in stems if stem.isdigit())


@dataclass(frozen=True)
class Dataset:
    """The paths of one dataset folder: no other module builds them."""

    root: str

    @property
    def metadata_path(self) -> str:
        return storage.join(self.root, "mmindex.json")

    @property
    def lock_path(self) -> str:
        return storage.join(self.root, ".lock")

    def exists(self) -> bool:
        """Whether the folder holds a dataset, or a run that is creating one."""
        return storage.exists(self.metadata_path) or storage.exists(self.lock_path)

    def shard_path(self, number: int) -> str:
        return storage.join(self.root, "shards", f"{shard_name(number)}.tar")

    def samples_path(self, number: int) -> str:
        return storage.join(self.root, "samples", f"{shard_name(number)}.parquet")

    def rejects_path(self, name: str) -> str:
        return storage.join(self.root, "rejects", f"{name}.parquet")

    def embeddings_path(self, space: str) -> str:
        return storage.join(self.root, "embeddings", space)

    def index_path(self, space: str, modality: str) -> str:
        return storage.join(self.root, "indexes", space, modality)

    def unit_record(self, unit: str) -> str:
        """The checksum record of a unit of files committed together (``shards/000000``,
        ``embeddings/offline/000000``, ``rejects/NAME``; see checksums.py)."""
        return storage.join(self.root, "checksums", f"{unit}.json")

    def record_path(self, number: int) -> str:
        """The checksum record of a shard's tar and samples parquet."""
        return self.unit_record(f"shards/{shard_name(number)}")

    def rejects_record(self, name: str) -> str:
        return self.unit_record(f"rejects/{name}")

    def scratch_path(self, name: str) -> str:
        return storage.join(self.root, ".scratch", name)

    def committed_shards(self) -> list[int]:
        """Numbers of the shards whose samples parquet exists."""
        return numbered(storage.join(self.root, "samples", "*.parquet"))

    def recorded_shards(self) -> list[int]:
        """Numbers of the shards with a checksum record (one whose parquet is gone, too)."""
        return numbered(self.unit_record("shards/*"))

    def reject_names(self) -> list[str]:
        """Names of the rejects files, and of those whose record is left though the file is gone."""
        return sorted({posixpath.basename(p).rsplit(".", 1)[0]
                       for p in [*storage.glob(self.rejects_path("*")), *storage.glob(self.rejects_record("*"))]})

    def index_modalities(self, space: str) -> list[str]:
        """The modalities that have an index folder (with anything in it) in ``space``."""
        return sorted({posixpath.basename(posixpath.dirname(p))
                       for p in storage.glob(storage.join(self.index_path(space, "*"), "*"))})

    def damaged_shard(self, number: int) -> str | None:
        """What is wrong with a committed shard by the cheap check (files present, sizes as recorded), saying
        how to repair it; None when it passes."""
        problem = unit_problem(self.root, self.record_path(number))
        if problem is None:
            return None
        return (f"shard {shard_name(number)} is damaged ({problem[0]}: {problem[1]}): run `mmindex check {self.root} "
                f"--repair`, which rebuilds it from its sources")

    def remove_incomplete(self) -> list[str]:
        """Deletes what an interrupted run left: temporary files, run reports, tars (and their checksum records)
        with no committed parquet."""
        committed = {shard_name(n) for n in self.committed_shards()}
        leftovers = [p for folder in ("", "shards", "samples", "rejects", "checksums/shards", "checksums/rejects")
                     for p in storage.glob(storage.join(self.root, folder, f"{storage.TEMP_MARK}*"))]
        leftovers += storage.glob(self.scratch_path("*"))
        leftovers += [p for folder, ext in (("shards", ".tar"), ("checksums/shards", ".json"))
                      for p in storage.glob(storage.join(self.root, folder, f"*{ext}"))
                      if posixpath.basename(p)[: -len(ext)] not in committed]
        storage.delete(leftovers)
        return leftovers
