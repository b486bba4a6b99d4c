"""The on-disk dataset: the contract between ingest, embed, index and search.

    DATASET/
      mmindex.json            format version, counts, shards, and a record of each stage run
      shards/NNNNNN.tar       webdataset shards: KEY.jpg|png|..., KEY.wav|flac|..., KEY.txt, KEY.json
      samples/NNNNNN.parquet  one row per sample of the shard of the same number (see SAMPLES_SCHEMA)
      rejects/*.parquet       every input that was not ingested, with a reason (see REJECTS_SCHEMA)
      embeddings/<space>/     vectors per shard and modality (mmindex.embed.store)
      indexes/<space>/<modality>/  a FAISS index and its id -> key map (mmindex.index.store)
      checksums/              size and sha256 of every committed file, one record per shard (mmindex.checksums)

Shard members are named by webdataset's rule (mmindex.webdataset): ``KEY.EXT``.

A shard is committed when its samples parquet exists: the tar is renamed into place first, then the
parquet, so a tar without a parquet is the leftover of an interrupted run and is removed by the next.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex import checksums, storage

FORMAT = "mmindex-dataset"
FORMAT_VERSION = 1
SHARD_DIGITS = 6
MODALITIES = ("image", "audio", "text")  # what a sample may hold and a space may embed, in this order

SAMPLES_SCHEMA = pa.schema([
    pa.field("key", pa.string(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("modalities", pa.list_(pa.string()), nullable=False),
    pa.field("members", pa.list_(pa.string()), nullable=False),
    pa.field("caption", pa.string()),
    pa.field("source", pa.string(), nullable=False),
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("bytes", pa.int64(), nullable=False),
    pa.field("image_format", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("audio_format", pa.string()),
    pa.field("sample_rate", pa.int32()),
    pa.field("channels", pa.int32()),
    pa.field("duration_s", pa.float64()),
])

REJECTS_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("detail", pa.string(), nullable=False),
])


class DatasetBusy(RuntimeError):
    """Another run is writing to the dataset."""


def shard_name(number: int) -> str:
    return f"{number:0{SHARD_DIGITS}d}"


def parquet_bytes(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    """Rows as a parquet file; the same rows always give the same bytes."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer, compression="zstd")
    return buffer.getvalue()


def parquet_file(path: str) -> pq.ParquetFile:
    """A parquet file that Arrow reads itself: a local file by its path, a remote one read whole into an Arrow
    buffer. Never through a Python file object: Arrow's I/O threads then hold Python-backed buffers that they
    may release after the interpreter has begun to exit, which aborts the process ('terminate called without
    an active exception', exit status 134) after its work is done."""
    return pq.ParquetFile(path if storage.is_local(path) else pa.BufferReader(storage.read_bytes(path)))


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    return parquet_file(path).read(columns=columns)


def read_samples(samples_parquet: str, columns: list[str] | None = None) -> pa.Table:
    """One shard's samples parquet; a damaged one is an error that says what to do (not Arrow's message alone)."""
    try:
        return read_parquet(samples_parquet, columns)
    except (OSError, pa.ArrowException) as err:
        root = posixpath.dirname(posixpath.dirname(samples_parquet))
        raise ValueError(f"{samples_parquet} is damaged ({' '.join(str(err).split())[:100]}): restore it from a copy "
                         f"(`mmindex check {root}` lists every damaged file and what repairs it)") from None


def sample_keys(samples_parquet: str) -> list[str]:
    """The keys of one shard's samples."""
    return read_samples(samples_parquet, ["key"]).column("key").to_pylist()


@dataclass(frozen=True)
class Dataset:
    """Paths and bookkeeping of one dataset folder (local or on any Beam file system)."""

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

    def record_path(self, number: int) -> str:
        """The checksum record of a shard's tar and samples parquet (mmindex.checksums)."""
        return checksums.record_path(self.root, f"shards/{shard_name(number)}")

    def damaged_shard(self, number: int) -> str | None:
        """What is wrong with a committed shard by the cheap check (files present, sizes as recorded), saying
        how to repair it; None when it passes."""
        problem = checksums.unit_problem(self.root, self.record_path(number))
        if problem is None:
            return None
        return (f"shard {shard_name(number)} is damaged ({problem[0]}: {problem[1]}): run `mmindex check {self.root} "
                f"--repair`, which rebuilds it from its sources")

    def scratch_path(self, name: str) -> str:
        return storage.join(self.root, ".scratch", name)

    @contextlib.contextmanager
    def exclusive(self, stage: str) -> Iterator[None]:
        """Refuses a second run writing to the same local dataset; a lock whose process died is taken over.

        (Object stores have no such lock: run one writer per dataset there.)
        """
        if not storage.is_local(self.root):
            yield
            return
        os.makedirs(self.root, exist_ok=True)
        path = self.lock_path
        mine = json.dumps({"stage": stage, "pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                holder = _read_lock(path)
                if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid", -1)):
                    os.unlink(path)
                    continue
                raise DatasetBusy(f"{self.root} is being written by another run ({holder.get('stage')}, "
                                   f"pid {holder.get('pid')} on {holder.get('host')}); if none is running, "
                                   f"delete {path}") from None
        else:
            raise DatasetBusy(f"could not lock {self.root}")
        try:  # a lock that cannot be written (a full disk) is removed, or it would turn the next run away
            with storage.naming(path), os.fdopen(fd, "w") as f:
                f.write(mine)
            yield
        finally:
            os.unlink(path)

    def committed_shards(self) -> list[int]:
        """Numbers of the shards whose samples parquet exists."""
        return numbered(storage.join(self.root, "samples", "*.parquet"))

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

    def read_metadata(self) -> dict[str, Any]:
        if not storage.exists(self.metadata_path):
            return {}
        metadata = json.loads(storage.read_bytes(self.metadata_path))
        if metadata.get("format") != FORMAT or metadata.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{self.metadata_path} is not an mmindex dataset of format version "
                             f"<= {FORMAT_VERSION}; upgrade mmindex to read it")
        return metadata

    def record_run(self, run: dict[str, Any], sources: list[str]) -> None:
        """Adds a run to mmindex.json, with the counts and shards that the committed files give now."""
        metadata = self.read_metadata() or {"format": FORMAT, "format_version": FORMAT_VERSION,
                                            "created": run["started"], "runs": []}
        totals = self.totals()
        metadata.update(counts={k: totals[k] for k in ("samples", "bytes", "modalities")}, shards=totals["shards"])
        metadata["sources"] = sorted(set(metadata.get("sources", [])) | set(sources))
        metadata["runs"].append(run)
        self.write_metadata(metadata)

    def metadata_behind(self) -> bool:
        """Whether mmindex.json does not list the committed shards: it was deleted, or a run was stopped between
        committing its last shard and recording itself."""
        recorded = [shard["name"] for shard in self.read_metadata().get("shards", [])]
        return recorded != [shard_name(n) for n in self.committed_shards()]

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        storage.write_atomic(self.metadata_path, json.dumps(metadata, indent=2, sort_keys=True).encode())

    def captions(self) -> dict[str, str]:
        """Each committed sample's caption by key, whitespace collapsed (samples without one left out)."""
        out = {}
        for number in self.committed_shards():
            table = read_samples(self.samples_path(number), columns=["key", "caption"])
            for key, caption in zip(table.column("key").to_pylist(), table.column("caption").to_pylist(),
                                    strict=True):
                if caption and caption.strip():
                    out[key] = " ".join(caption.split())
        return out

    def recorded_rejects(self) -> set[tuple[str, str, str]]:
        """(source, reason, detail) of every reject already listed, so a repeat does not list it again."""
        recorded: set[tuple[str, str, str]] = set()
        for path in storage.glob(storage.join(self.root, "rejects", "*.parquet")):
            table = read_parquet(path)
            recorded.update(zip(*(table.column(c).to_pylist() for c in ("source", "reason", "detail")),
                                strict=True))
        return recorded

    def totals(self) -> dict[str, Any]:
        """Counts over every committed shard, read from the samples parquet (not from a cache that can lag)."""
        shards, samples, nbytes = [], 0, 0
        modalities = dict.fromkeys(MODALITIES, 0)
        for number in self.committed_shards():
            table = read_parquet(self.samples_path(number), columns=["modalities"])
            for present in table.column("modalities").to_pylist():
                for modality in present:
                    modalities[modality] += 1
            tar_bytes = storage.size(self.shard_path(number))
            shards.append({"name": shard_name(number), "samples": table.num_rows, "bytes": tar_bytes})
            samples += table.num_rows
            nbytes += tar_bytes
        return {"samples": samples, "bytes": nbytes, "modalities": modalities, "shards": shards}


def numbered(pattern: str) -> list[int]:
    """The numbers of the files matching ``pattern`` whose names are numbers (``000007.parquet``), sorted."""
    stems = (posixpath.basename(path).rsplit(".", 1)[0] for path in storage.glob(pattern))
    return sorted(int(stem) for stem in stems if stem.isdigit())


def _read_lock(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True
