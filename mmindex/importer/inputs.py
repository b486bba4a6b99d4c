"""The files `mmindex import` reads: .npy vector files (float16 or float32, N x d) and their row-aligned metadata
parquet, paired by file number as LAION lays them out (img_emb/img_emb_0000.npy beside
metadata/metadata_0000.parquet). Everything is read through the storage layer, so object stores work; a .npy is
never unpickled. Each problem is one line that names the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mmindex import storage
from mmindex.dataset.parquet import parquet_file, read_parquet
from mmindex.dataset.sources import row_source

CHUNK_ROWS = 65_536          # vectors read, checked and normalised at a time
CAPTION = "caption"          # LAION's metadata column of the text that goes with each vector
BAD_KEY = re.compile(r"[\s./\\]")  # webdataset ends a key at its first dot; slashes would be folders


class BadEmbeddings(ValueError):
    """An input file that cannot be imported; the message names it and says why."""


@dataclass(frozen=True)
class VectorFile:
    """One .npy file as its header describes it, checked against its size, with its metadata parquet."""

    path: str
    rows: int
    dim: int
    dtype: str              # as the header says: <f2, <f4 ...
    offset: int             # where the vectors begin
    metadata: str | None    # its row-aligned parquet


def listed(paths: tuple[str, ...], ext: str) -> list[str]:
    """The files named, and those directly inside the folders named, that end with ``ext``; local ones absolute
    (a file's path identifies it to the next import)."""
    found = []
    for path in paths:
        if storage.is_local(path):
            path = posixpath.abspath(path)
        if path.endswith(ext):
            if not storage.exists(path):
                raise BadEmbeddings(f"{path}: no such file")
            found.append(path)
            continue
        inside = storage.glob(storage.join(path, f"*{ext}"))
        if not inside:
            raise BadEmbeddings(f"{path}: no {ext} files there")
        found += inside
    return sorted(set(found))


def _number(path: str) -> str:
    """What pairs a vector file with its metadata: the last number in its name (img_emb_0007 and metadata_0007),
    else the whole name."""
    stem = posixpath.basename(path).rsplit(".", 1)[0]
    numbers = re.findall(r"\d+", stem)
    return str(int(numbers[-1])) if numbers else stem


def paired(embeddings: tuple[str, ...], metadata: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """Each .npy file with its metadata parquet (None when no --metadata is given)."""
    vectors = listed(embeddings, ".npy")
    if not metadata:
        return [(path, None) for path in vectors]
    by_number: dict[str, str] = {}
    for path in listed(metadata, ".parquet"):
        if _number(path) in by_number:
            raise BadEmbeddings(f"{path}: {by_number[_number(path)]} has the same number; give one metadata file "
                                f"per vector file")
        by_number[_number(path)] = path
    pairs = []
    for path in vectors:
        if _number(path) not in by_number:
            raise BadEmbeddings(f"{path}: no metadata parquet numbered {_number(path)} among --metadata")
        pairs.append((path, by_number[_number(path)]))
    return pairs


def vector_file(path: str, metadata: str | None, key_column: str | None) -> VectorFile:
    """A vector file's header and its metadata's footer, checked: what can be known before reading any vector."""
    fmt = np.lib.format
    try:
        with storage.open_read(path) as f:
            version = fmt.read_magic(f)
            read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (ValueError, EOFError, SyntaxError) as err:
        raise BadEmbeddings(f"{path}: not a .npy file numpy.save wrote ({err})") from None
    if dtype.hasobject:
        raise BadEmbeddings(f"{path}: holds Python objects (a pickle), which import never loads: save the vectors "
                            f"as a float16 or float32 array")
    if dtype.kind != "f" or dtype.itemsize not in (2, 4):
        raise BadEmbeddings(f"{path}: {dtype} values; import takes float16 or float32 vectors")
    if len(shape) != 2 or 0 in shape:
        raise BadEmbeddings(f"{path}: an array of shape {shape}; import takes N x d vectors, one per row")
    if fortran:
        raise BadEmbeddings(f"{path}: stored in Fortran order; save np.ascontiguousarray(vectors) instead")
    expected, found = offset + shape[0] * shape[1] * dtype.itemsize, storage.size(path)
    if found != expected:
        cut = "truncated" if found < expected else "longer than its header says"
        raise BadEmbeddings(f"{path}: {cut} ({found:,} bytes; a {shape[0]:,} x {shape[1]} {dtype} array takes "
                            f"{expected:,})")
    if metadata is not None:
        _check_metadata(metadata, shape[0], path, key_column)
    return VectorFile(path, shape[0], shape[1], dtype.str, offset, metadata)


def _check_metadata(metadata: str, rows: int, path: str, key_column: str | None) -> None:
    try:
        footer = parquet_file(metadata).metadata
    except (OSError, pa.ArrowException) as err:
        raise BadEmbeddings(f"{metadata}: not a readable parquet file ({' '.join(str(err).split())[:100]})") from None
    if footer.num_rows != rows:
        raise BadEmbeddings(f"{metadata}: {footer.num_rows:,} rows, but {path} holds {rows:,} vectors; they must "
                            f"match row for row")
    columns = footer.schema.to_arrow_schema().names
    if key_column is not None and key_column not in columns:
        raise BadEmbeddings(f"{metadata}: no column {key_column!r} for --key-column (it has {', '.join(columns)})")


def unit_rows(file: VectorFile) -> Iterator[np.ndarray]:
    """The file's vectors, L2-normalised, as float16 chunks of rows (streamed); BadEmbeddings at the first row that
    is NaN, infinite or zero."""
    for start, chunk in _chunks(file):
        vectors = chunk.astype(np.float32)
        finite = np.isfinite(vectors).all(axis=1)
        if not finite.all():
            raise BadEmbeddings(f"{file.path}: row {start + int(np.argmin(finite)):,} holds NaN or inf")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not norms.all():
            raise BadEmbeddings(f"{file.path}: row {start + int(np.argmin(norms[:, 0])):,} is all zeros: it has no "
                                f"direction to search by")
        yield (vectors / norms).astype(np.float16)


def _chunks(file: VectorFile) -> Iterator[tuple[int, np.ndarray]]:
    """The file's rows, a chunk at a time, with plain reads (mapped, every page read would stay in the process)."""
    dtype = np.dtype(file.dtype)
    with storage.open_read(file.path) as f:
        f.seek(file.offset)
        for start in range(0, file.rows, CHUNK_ROWS):
            count = min(CHUNK_ROWS, file.rows - start)
            data = f.read(count * file.dim * dtype.itemsize)
            yield start, np.frombuffer(data, dtype).reshape(count, file.dim)


@dataclass(frozen=True)
class ImportedSamples:
    """Some of a file's samples (a batch of rows) as a shard holds them: tar members and samples parquet rows."""

    members: list[tuple[str, dict[str, bytes]]]
    rows: list[dict[str, Any]]


def keys_of(file: VectorFile, key_column: str | None) -> list[str]:
    """Each row's key, in row order: from ``key_column``, else the file's name and the row; BadEmbeddings for a
    key that is missing, twice or unusable."""
    if key_column is None:
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", posixpath.basename(file.path).rsplit(".", 1)[0])
        return [f"{stem}_{row:09d}" for row in range(file.rows)]
    keys, seen = [], {}
    for row, value in enumerate(_metadata(file, [key_column]).column(key_column).to_pylist()):
        key = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
        if not key or BAD_KEY.search(key):
            raise BadEmbeddings(f"{file.metadata}: row {row:,}: {key_column} {value!r} cannot be a sample's key (it "
                                f"needs a value without spaces, dots or slashes)")
        if key in seen:
            raise BadEmbeddings(f"{file.metadata}: {key_column} {key!r} is in rows {seen[key]:,} and {row:,}; keys "
                                f"must be unique")
        seen[key] = row
        keys.append(key)
    return keys


def samples_of(file: VectorFile, keys: list[str], key_column: str | None, shard: str) -> Iterator[ImportedSamples]:
    """The file's samples, CHUNK_ROWS rows at a time (a row's Python objects take about a kilobyte: a file of a
    million rows is never held whole): its caption as KEY.txt and its other metadata columns as KEY.json."""
    for start, records in _metadata_batches(file):
        members, rows = [], []
        for number, (key, record) in enumerate(zip(keys[start:start + len(records)], records, strict=True),
                                               start=start):
            caption = record.pop(CAPTION, None)
            caption = caption if isinstance(caption, str) and caption.strip() else None
            files = {"json": json.dumps({k: _plain(v) for k, v in record.items()}, sort_keys=True,
                                        ensure_ascii=False, default=str).encode()}
            if caption is not None:
                files["txt"] = caption.encode()
            members.append((key, files))
            digest = hashlib.sha256(b"".join(files[ext] + b"\0" for ext in sorted(files))).hexdigest()
            rows.append({"key": key, "shard": shard, "modalities": ["text"] if caption else [],
                         "members": sorted(files), "caption": caption, "source": row_source(file.path, number),
                         "sha256": digest, "bytes": sum(map(len, files.values())),
                         "width": _pixels(record.get("width")), "height": _pixels(record.get("height"))})
        yield ImportedSamples(members, rows)


def _metadata_batches(file: VectorFile) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(first row, the metadata rows from it) in batches; rows with no metadata without a parquet."""
    if file.metadata is None:
        for start in range(0, file.rows, CHUNK_ROWS):
            yield start, [{} for _ in range(min(CHUNK_ROWS, file.rows - start))]
        return
    start = 0
    try:
        for batch in parquet_file(file.metadata).iter_batches(batch_size=CHUNK_ROWS):
            yield start, batch.to_pylist()
            start += batch.num_rows
    except (OSError, pa.ArrowException) as err:
        raise BadEmbeddings(f"{file.metadata}: unreadable ({' '.join(str(err).split())[:100]})") from None


def _metadata(file: VectorFile, columns: list[str] | None = None) -> pa.Table:
    try:
        return read_parquet(file.metadata, columns)
    except (OSError, pa.ArrowException) as err:
        raise BadEmbeddings(f"{file.metadata}: unreadable ({' '.join(str(err).split())[:100]})") from None


def _plain(value: Any) -> Any:
    """A metadata value as JSON holds it: NaN and infinities (which JSON has not) as null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _pixels(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31 else None
