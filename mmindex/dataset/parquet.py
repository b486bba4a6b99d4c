"""Parquet as the dataset writes and reads it: the same rows always give the same bytes."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmindex import storage


def parquet_bytes(rows: list[dict[str, Any]] | dict[str, list[Any]], schema: pa.Schema) -> bytes:
    """Rows (or the same as columns: a tenth of the memory for shards of millions) as a parquet file; the same rows
    always give the same bytes."""
    buffer = io.BytesIO()
    table = (pa.Table.from_pydict(rows, schema=schema) if isinstance(rows, dict)
             else pa.Table.from_pylist(rows, schema=schema))
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def parquet_file(path: str) -> pq.ParquetFile:
    """A parquet file that Arrow reads itself: a local file by its path, a remote one read whole into an Arrow
    buffer. Never through a Python file object: Arrow's I/O threads then hold Python-backed buffers that they
    may release after the interpreter has begun to exit, which aborts the process ('terminate called without
    an active exception', exit status 134) after its work is done."""
    return pq.ParquetFile(path if storage.is_local(path) else pa.BufferReader(storage.read_bytes(path)))


def read_parquet(path: str, columns: list[str] | None = None) -> pa.Table:
    return parquet_file(path).read(columns=columns)


@dataclass
class ShardItems:
    """One shard's items as a stage commits them: an array per item by modality, and a row per item naming its
    place in its modality's arrays (None: the item has no array, and its row says why)."""

    number: int
    arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add_item(self, key: str, modality: str, array: np.ndarray | None, **columns: Any) -> None:
        row = None
        if array is not None:
            row = len(self.arrays.setdefault(modality, []))
            self.arrays[modality].append(array)
        self.rows.append({"key": key, "modality": modality, "row": row, **columns})
