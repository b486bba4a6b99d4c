"""embeddings/<space>/ in a dataset: per shard, float16 vectors per modality and a parquet that commits them.

    embeddings/<space>/space.json             the space's settings (vectors from other settings never mix)
    embeddings/<space>/bridge.npz             a bridge space's learned mapping (its digest is in space.json)
    embeddings/<space>/<modality>/NNNNNN.npy  float16, one row per embedded item, in the parquet's order
    embeddings/<space>/NNNNNN.parquet         key, modality, row (into the .npy), skipped (reason), note
    embeddings/<space>/stats.json             per run: samples/s per modality and device

The parquet is written last, with an atomic rename: a shard's embeddings exist once it exists. Vector files
without it are leftovers of an interrupted run and are overwritten.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mmindex import storage
from mmindex.bridge import mapping as mappings
from mmindex.dataset.checksums import Recorder, unit_problem
from mmindex.dataset.layout import Dataset, numbered, shard_name
from mmindex.dataset.parquet import ShardItems, parquet_bytes, read_parquet
from mmindex.modalities import MODALITIES
from mmindex.spaces import Space, resolve_space

EMBEDDINGS_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("row", pa.int32()),
    pa.field("skipped", pa.string()),
    pa.field("note", pa.string()),
])


log = logging.getLogger("mmindex")
SPACE_FILE = "space.json"
MAPPING_FILE = "bridge.npz"


class SpaceMismatch(ValueError):
    """The folder holds vectors made with other settings under the same space name."""


class DamagedEmbeddings(ValueError):
    """A committed shard's embeddings cannot be read back as they were written."""

    def __init__(self, detail: str, repair: str):
        super().__init__(f"{detail}: {repair}")
        self.detail = detail


class ShardEmbeddings(ShardItems):
    """One shard's result: vectors by modality and one row per item (embedded, or skipped with a reason)."""

    @property
    def vectors(self) -> dict[str, list[np.ndarray]]:
        return self.arrays

    def add(self, key: str, modality: str, vector: np.ndarray | None, skipped: str | None = None,
            note: str | None = None) -> None:
        self.add_item(key, modality, vector, skipped=skipped, note=note)


@dataclass(frozen=True)
class ShardSummary:
    """What one shard's committed embeddings hold (or why the shard failed): what executors report."""

    number: int
    embedded: dict[str, int] = field(default_factory=dict)               # modality -> items
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)    # (modality, reason) -> items
    seconds: dict[str, float] = field(default_factory=dict)              # modality -> seconds, where measured
    waited: dict[str, float] = field(default_factory=dict)               # of them, waiting for decoded input
    device: str | None = None
    failed: str | None = None

    @classmethod
    def of(cls, number: int, rows: list[dict[str, Any]], **measured: Any) -> ShardSummary:
        """From a shard's embeddings rows (key, modality, row, skipped: see EMBEDDINGS_SCHEMA)."""
        embedded = Counter(row["modality"] for row in rows if row["row"] is not None)
        skipped = Counter((row["modality"], reason_of(row["skipped"])) for row in rows if row["skipped"])
        return cls(number, dict(embedded), dict(skipped), **measured)


def reason_of(skipped: str) -> str:
    """A skipped item's reason without its detail ('unreadable audio: ...'), as summaries count them."""
    return skipped.split(":")[0]


@dataclass(frozen=True)
class Skipped:
    """A modality of which a space embedded no item at all, every one skipped: no index of it can exist, and
    running index again cannot change that."""

    dataset: str               # its root
    space: str
    modality: str
    reasons: dict[str, int]    # reason -> items, most frequent first
    instead: str | None        # a shipped space that embeds what this one skips by design (Space.embeds_instead)

    def __str__(self) -> str:
        reasons = "; ".join(f"{reason}: {items:,}" for reason, items in self.reasons.items())
        said = (f"every {self.modality} item of the dataset was skipped in space {self.space!r} ({reasons}), so no "
                f"{self.modality} can be found in it")
        if self.instead:
            said += f"; space {self.instead!r} embeds them (its model comes from the Hugging Face hub)"
        return said

    def advice(self) -> str:
        """The message with the commands that embed the modality (for an interface that runs commands)."""
        if not self.instead:
            return str(self)
        root = self.dataset
        return f"{self}: run `mmindex embed {root} --model {self.instead}`, then `mmindex index {root} --model " \
               f"{self.instead}`"


def load_vectors(path: str, ndim: int = 2) -> np.ndarray:
    """A vector file: a float16 matrix (``ndim`` 3: a stack of them), memory-mapped where the file is local and
    never unpickled. OSError, ValueError or EOFError, saying how, for anything else."""
    try:
        if storage.is_local(path):
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            vectors = np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False)
    except (ValueError, EOFError) as err:
        raise ValueError(f"not a vector file: {err}") from None
    if not isinstance(vectors, np.ndarray) or vectors.dtype != np.float16 or vectors.ndim != ndim:
        raise ValueError(f"not a float16 matrix ({getattr(vectors, 'dtype', type(vectors).__name__)}, "
                         f"{getattr(vectors, 'ndim', 0)}-d)")
    return vectors


def write_vectors(out: BinaryIO, shape: tuple[int, int], chunks: Iterable[np.ndarray]) -> None:
    """A float16 matrix as the .npy bytes np.save writes, chunk of rows by chunk: a file of any size is written in
    bounded memory."""
    np.lib.format.write_array_header_1_0(out, {"descr": "<f2", "fortran_order": False, "shape": shape})
    for chunk in chunks:
        out.write(np.ascontiguousarray(chunk, dtype="<f2").tobytes())


def embedded_keys(table: pa.Table, modality: str) -> list[str]:
    """Keys of a shard's embedded items of ``modality`` (skipped ones have no row), in vector order: filtered and
    ordered by Arrow (a row as a Python dict cost a second per million)."""
    embedded = table.filter(pc.and_(pc.equal(table["modality"], modality), pc.is_valid(table["row"])))
    return embedded["key"].take(pc.sort_indices(embedded["row"])).to_pylist()


def recorded_spaces(dataset: Dataset) -> list[Space]:
    """The spaces the dataset holds embeddings of, with the settings their space.json recorded. A space is named
    by its folder, never by the name the file holds: a name is a path (embeddings/NAME, indexes/NAME), and one
    read from a file could lead out of the dataset."""
    found = []
    for path in storage.glob(storage.join(dataset.embeddings_path("*"), SPACE_FILE)):
        recorded = json.loads(storage.read_bytes(path))
        found.append(Space(posixpath.basename(posixpath.dirname(path)), recorded["settings"]))
    return found


def dataset_space(root: str, spec: str) -> Space:
    """The space ``--model`` names for a dataset's commands: a preset, YAML file or model, else one the dataset
    recorded under that name (a space of imported vectors, which nothing else defines)."""
    try:
        return resolve_space(spec)
    except FileNotFoundError:
        recorded = {space.name: space for space in recorded_spaces(Dataset(root))}
        if spec in recorded:
            return recorded[spec]
        raise


@dataclass(frozen=True)
class EmbeddingStore:
    dataset: Dataset
    space: Space

    @classmethod
    def of(cls, root: str, space: Space) -> EmbeddingStore:
        """The store of an ingested dataset; a folder with no ingested shards is an error that says what to run."""
        dataset = Dataset(root)
        if storage.is_local(root) and not os.path.isdir(root):
            what = "it is a file" if os.path.exists(root) else "no such folder"
            raise FileNotFoundError(f"no dataset at {root}: {what}. Check the path, or make one with `mmindex ingest "
                                    f"SOURCES --out {root}`")
        if not dataset.committed_shards():
            raise FileNotFoundError(f"{root} has no ingested shards: run `mmindex ingest SOURCES --out {root}` "
                                    f"first")
        return cls(dataset, bound(space, dataset.embeddings_path(space.name)))

    @property
    def root(self) -> str:
        return self.dataset.embeddings_path(self.space.name)

    def parquet_path(self, number: int) -> str:
        return storage.join(self.root, f"{shard_name(number)}.parquet")

    def vectors_path(self, number: int, modality: str) -> str:
        return storage.join(self.root, modality, f"{shard_name(number)}.npy")

    def claim(self) -> None:
        """Records the space's settings, or refuses if the folder holds vectors made with other settings;
        removes what an interrupted run left."""
        self.remove_incomplete()
        path = storage.join(self.root, SPACE_FILE)
        mine = {"name": self.space.name, "fingerprint": self.space.fingerprint, "settings": self.space.settings}
        if storage.exists(path):
            recorded = json.loads(storage.read_bytes(path))
            if recorded.get("fingerprint") != self.space.fingerprint:
                raise SpaceMismatch(f"{self.root} holds vectors made with other settings of space "
                                    f"{self.space.name!r}; delete that folder to re-embed, or give the new "
                                    f"settings another name")
            return
        storage.write_atomic(path, json.dumps(mine, indent=2, sort_keys=True).encode())

    def remove_incomplete(self) -> None:
        """Deletes temporary files (an interrupted run's, or those of tasks a cluster ran again) and the checksum
        records of shards never committed."""
        leftovers = [p for folder in ("", *MODALITIES)
                     for p in storage.glob(storage.join(self.root, folder, f"{storage.TEMP_MARK}*"))]
        leftovers += storage.glob(storage.join(posixpath.dirname(self.record_path(0)), f"{storage.TEMP_MARK}*"))
        committed = self.committed()  # a record whose parquet was never written: a run killed in between
        leftovers += [self.record_path(n) for n in self.recorded() if n not in committed]
        storage.delete(leftovers)

    def committed(self) -> set[int]:
        return set(numbered(storage.join(self.root, "*.parquet")))

    def pending(self) -> list[int]:
        """Dataset shards whose embeddings are not committed yet."""
        done = self.committed()
        return [n for n in self.dataset.committed_shards() if n not in done]

    def damaged(self) -> list[int]:
        """Committed shards whose files cannot be read back whole (the next embed run re-embeds them)."""
        bad = []
        for number in sorted(self.committed()):
            try:
                self.read(number)
            except DamagedEmbeddings as err:
                log.warning("embed: %s: embedding shard %s again", err.detail, shard_name(number))
                bad.append(number)
        return bad

    def record_path(self, number: int) -> str:
        """The checksum record of a shard's embeddings (mmindex.dataset.checksums)."""
        return self.dataset.unit_record(f"embeddings/{self.space.name}/{shard_name(number)}")

    def recorded(self) -> list[int]:
        """Shards with a checksum record (one whose parquet is gone, too)."""
        return numbered(self.dataset.unit_record(f"embeddings/{self.space.name}/*"))

    @property
    def mapping_path(self) -> str:
        return storage.join(self.root, MAPPING_FILE)

    def recorder(self, number: int) -> Recorder:
        """Writes a shard's vector files and records them (see ``commit_rows``)."""
        return Recorder(self.dataset.root, self.record_path(number))

    def commit(self, shard: ShardEmbeddings) -> None:
        recorder = self.recorder(shard.number)
        for modality, vectors in sorted(shard.vectors.items()):
            stacked = np.stack(vectors)
            with recorder.writer(self.vectors_path(shard.number, modality)) as out:
                write_vectors(out, stacked.shape, [stacked])
        self.commit_rows(recorder, shard.number, shard.rows)

    def commit_rows(self, recorder: Recorder, number: int, rows: list[dict[str, Any]] | dict[str, list[Any]]) -> None:
        """Commits a shard whose vector files ``recorder`` wrote: its parquet (EMBEDDINGS_SCHEMA; rows, or columns),
        written last."""
        recorder.commit(self.parquet_path(number), parquet_bytes(rows, EMBEDDINGS_SCHEMA))

    def read(self, number: int) -> tuple[pa.Table, dict[str, np.ndarray]]:
        """A committed shard's rows and its vectors by modality (memory-mapped where the file is local);
        DamagedEmbeddings, saying how to repair it, when they do not read back as written."""
        self._check_sizes(number)
        try:
            table = read_parquet(self.parquet_path(number))
        except (OSError, pa.ArrowException) as err:
            raise self._damaged(number, self.parquet_path(number), f"unreadable: {err}") from None
        rows = Counter(m for m, row in zip(table.column("modality").to_pylist(), table.column("row").to_pylist(),
                                           strict=True) if row is not None)
        vectors = {m: self._load(number, m) for m in rows}  # sizes checked above, once for the shard
        for modality, count in rows.items():
            if len(vectors[modality]) != count:
                raise self._damaged(number, self.vectors_path(number, modality), f"{len(vectors[modality]):,} "
                                    f"vectors for {count:,} embedded items")
        return table, vectors

    def vector_counts(self, modality: str) -> dict[str, int]:
        """Vectors of ``modality`` per committed shard, by shard name (what an index of it must hold)."""
        out = {}
        for number in sorted(self.committed()):
            table = read_parquet(self.parquet_path(number), columns=["modality", "row"])
            n = pc.sum(pc.and_(pc.equal(table["modality"], modality), pc.is_valid(table["row"]))).as_py()
            if n:
                out[shard_name(number)] = n
        return out

    def wholly_skipped(self) -> list[Skipped]:
        """The modalities of which the space skipped every item of the committed shards, with the reasons."""
        embedded, reasons = set(), {}
        for number in sorted(self.committed()):  # counted by Arrow: a shard of imported vectors has a million rows
            table = read_parquet(self.parquet_path(number), columns=["modality", "row", "skipped"])
            has_row = pc.is_valid(table["row"])
            embedded.update(pc.unique(table["modality"].filter(has_row)).to_pylist())
            skipped = table.filter(pc.and_(pc.invert(has_row), pc.not_equal(table["skipped"], "")))
            counted = skipped.group_by(["modality", "skipped"], use_threads=False).aggregate([([], "count_all")])
            for group in counted.to_pylist():
                reasons.setdefault(group["modality"], Counter())[reason_of(group["skipped"])] += group["count_all"]
        return [Skipped(self.dataset.root, self.space.name, modality,
                        dict(sorted(counts.items(), key=lambda reason: (-reason[1], reason[0]))),
                        self.space.embeds_instead(modality))
                for modality, counts in sorted(reasons.items()) if modality not in embedded]

    def summary(self, number: int) -> ShardSummary:
        """What a committed shard's embeddings hold."""
        return ShardSummary.of(number, read_parquet(self.parquet_path(number)).to_pylist())

    def vectors(self, number: int, modality: str) -> np.ndarray:
        """A committed shard's vectors of one modality, memory-mapped where the file is local. Never unpickled:
        a file that is not a float16 matrix is reported damaged."""
        self._check_sizes(number)
        return self._load(number, modality)

    def _load(self, number: int, modality: str) -> np.ndarray:
        path = self.vectors_path(number, modality)
        try:
            return load_vectors(path)
        except (OSError, ValueError, EOFError) as err:
            reason = "missing" if isinstance(err, FileNotFoundError) else str(err) or type(err).__name__
            raise self._damaged(number, path, reason) from None

    def _check_sizes(self, number: int) -> None:
        """The cheap check before reading a shard's files: each is there, of its recorded size."""
        problem = unit_problem(self.dataset.root, self.record_path(number))
        if problem:
            raise self._damaged(number, *problem)

    def _damaged(self, number: int, path: str, what: str) -> DamagedEmbeddings:
        return DamagedEmbeddings(f"{path} is damaged ({what})", f"run `mmindex embed {self.dataset.root} --model "
                                 f"{self.space.name}`, which embeds shard {shard_name(number)} again")

    def record_run(self, stats: dict[str, Any]) -> None:
        path = storage.join(self.root, "stats.json")
        runs = json.loads(storage.read_bytes(path))["runs"] if storage.exists(path) else []
        storage.write_atomic(path, json.dumps({"runs": [*runs, stats]}, indent=2).encode())


def bound(space: Space, root: str) -> Space:
    """The space with the mapping its vectors under ``root`` were made with; unchanged if it is no bridge or none
    is learned yet. A mapping file that is missing or not the one recorded is refused (its vectors would not
    match)."""
    record = storage.join(root, SPACE_FILE)
    if space.settings["kind"] != "bridge" or not storage.exists(record):
        return space
    recorded = json.loads(storage.read_bytes(record))["settings"].get("mapping", {})
    path = storage.join(root, MAPPING_FILE)
    if not storage.exists(path):
        raise SpaceMismatch(f"{path} is missing: the vectors in {root} were made with it. Restore it, or delete "
                            f"{root} to embed again with a new mapping")
    digest = mappings.digest(storage.read_bytes(path))  # the file is parsed where it is used (bridge_encoders)
    if digest != recorded.get("digest"):
        raise SpaceMismatch(f"{path} is not the mapping the vectors in {root} were made with (digest {digest}, "
                            f"recorded {recorded.get('digest')}); vectors of two mappings never mix. Restore it, "
                            f"or delete {root} to embed again")
    return Space(space.name, {**space.settings, "mapping": recorded}, mapping=path)
