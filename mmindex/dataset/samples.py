"""samples/ and rejects/: one row per ingested sample, and one per input that was not ingested, with why.

    samples/NNNNNN.parquet  one row per sample of the shard of the same number (SAMPLES_SCHEMA)
    rejects/NAME.parquet    source, reason and detail of each input not ingested (REJECTS_SCHEMA); NAME is
                            derived from the content, so the same rejects are never listed twice
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from mmindex import storage
from mmindex.dataset.checksums import Recorder
from mmindex.dataset.layout import Dataset, shard_name
from mmindex.dataset.parquet import parquet_bytes, parquet_file, read_parquet
from mmindex.dataset.sources import source_name
from mmindex.modalities import MODALITIES

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
RejectRow = tuple[str, str, str]   # (source, reason, detail)


def samples_bytes(rows: list[dict[str, Any]]) -> bytes:
    """A shard's samples parquet."""
    return parquet_bytes(rows, SAMPLES_SCHEMA)


def samples_writer(out: BinaryIO) -> pq.ParquetWriter:
    """A shard's samples parquet written a batch of rows at a time (into ``out``), for shards of millions."""
    return pq.ParquetWriter(out, SAMPLES_SCHEMA, compression="zstd")


def read_samples(samples_parquet: str, columns: list[str] | None = None, keys: list[str] | None = None) -> pa.Table:
    """One shard's samples parquet (with ``keys``, only their rows: row groups whose key range holds none of them
    are not read, which matters for shards of a million rows); a damaged one is an error that says what to do
    (not Arrow's message alone)."""
    try:
        if keys is not None:
            source = samples_parquet if storage.is_local(samples_parquet) else pa.BufferReader(
                storage.read_bytes(samples_parquet))
            return pq.read_table(source, columns=columns, filters=[("key", "in", keys)])
        return read_parquet(samples_parquet, columns)
    except (OSError, pa.ArrowException) as err:
        root = posixpath.dirname(posixpath.dirname(samples_parquet))
        raise ValueError(f"{samples_parquet} is damaged ({' '.join(str(err).split())[:100]}): restore it from a copy "
                         f"(`mmindex check {root}` lists every damaged file and what repairs it)") from None


def shown(caption: str | None, source: str | None) -> dict[str, str | None]:
    """A sample as a person is shown it: its caption trimmed (a text file's last newline is no part of it), and
    the name of its source, which stands in where there is no caption."""
    return {"caption": (caption or "").strip() or None, "name": source_name(source) if source else None}


def sample_keys(samples_parquet: str) -> list[str]:
    """The keys of one shard's samples."""
    return read_samples(samples_parquet, ["key"]).column("key").to_pylist()


def first_source(samples_parquet: str) -> str | None:
    """The source of a shard's first sample, read alone (an imported shard's samples all come from one file)."""
    for batch in parquet_file(samples_parquet).iter_batches(batch_size=1, columns=["source"]):
        return batch.column(0)[0].as_py() if batch.num_rows else None
    return None


def captions(dataset: Dataset) -> dict[str, str]:
    """Each committed sample's caption by key, whitespace collapsed (samples without one left out)."""
    out = {}
    for number in dataset.committed_shards():
        table = read_samples(dataset.samples_path(number), columns=["key", "caption"])
        for key, caption in zip(table.column("key").to_pylist(), table.column("caption").to_pylist(), strict=True):
            if caption and caption.strip():
                out[key] = " ".join(caption.split())
    return out


def totals(dataset: Dataset) -> dict[str, Any]:
    """Counts over every committed shard, read from the samples parquet (not from a cache that can lag)."""
    shards, samples, nbytes = [], 0, 0
    modalities = dict.fromkeys(MODALITIES, 0)
    for number in dataset.committed_shards():
        table = read_samples(dataset.samples_path(number), columns=["modalities"])
        for present in table.column("modalities").to_pylist():
            for modality in present:
                modalities[modality] += 1
        tar_bytes = storage.size(dataset.shard_path(number))
        shards.append({"name": shard_name(number), "samples": table.num_rows, "bytes": tar_bytes})
        samples += table.num_rows
        nbytes += tar_bytes
    return {"samples": samples, "bytes": nbytes, "modalities": modalities, "shards": shards}


def recorded_rejects(dataset: Dataset) -> set[RejectRow]:
    """(source, reason, detail) of every reject already listed, so a repeat does not list it again."""
    recorded: set[RejectRow] = set()
    for path in storage.glob(dataset.rejects_path("*")):
        table = read_parquet(path)
        recorded.update(zip(*(table.column(c).to_pylist() for c in ("source", "reason", "detail")), strict=True))
    return recorded


def write_rejects(dataset: Dataset, rejects: set[RejectRow]) -> str | None:
    """Writes rejects under a name derived from their content (so a repeat is a no-op); returns its path."""
    if not rejects:
        return None
    data = parquet_bytes([dict(zip(("source", "reason", "detail"), row, strict=True)) for row in sorted(rejects)],
                         REJECTS_SCHEMA)
    name = hashlib.sha256(data).hexdigest()[:16]
    path = dataset.rejects_path(name)
    if not storage.exists(path):
        Recorder(dataset.root, dataset.rejects_record(name)).commit(path, data)
    return path
