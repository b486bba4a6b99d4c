"""Recorded sizes and sha256 digests of committed files: how `mmindex check` tells a damaged file from a good one.

Each unit a stage commits (a shard with its samples parquet, a rejects parquet, a shard's embeddings, an index
generation) has one small JSON record (where: mmindex.dataset.layout) listing its files by path relative to the
dataset:

    {"format": "mmindex-checksums", "version": 1,
     "files": {"shards/000000.tar": {"bytes": 4700160, "sha256": "9f2c..."}, "samples/000000.parquet": {...}}}

Digests come from the bytes as they are written (a HashingWriter), never from reading the files back. The
record is written, atomically, just before the unit's commit file (the last file a unit writes), so a committed
unit always has its record; a record without a commit is a leftover that the next run overwrites.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from mmindex import storage
from mmindex.storage import HashingWriter

FORMAT = "mmindex-checksums"
VERSION = 1
CHUNK = 1 << 20


@dataclass(frozen=True)
class Sum:
    bytes: int
    sha256: str


class RecordUnreadable(ValueError):
    """A checksum record that is not one this module wrote."""


def relative(root: str, path: str) -> str:
    return path[len(root.rstrip("/")) + 1:] if path.startswith(root.rstrip("/") + "/") else path


class Recorder:
    """Writes a unit's files atomically and records the size and digest of each as it goes."""

    def __init__(self, root: str, record: str):
        self.root, self.record = root, record
        self.sums: dict[str, Sum] = {}

    @contextlib.contextmanager
    def writer(self, path: str) -> Iterator[HashingWriter]:
        with storage.atomic_writer(path) as out:
            yield out
        self.sums[relative(self.root, path)] = Sum(out.size, out.sha256.hexdigest())

    def record_file(self, path: str) -> int:
        """Records a file that was written without a writer of ours (read back once); returns its size."""
        found = file_sum(path)
        self.sums[relative(self.root, path)] = found
        return found.bytes

    def write(self, path: str, data: bytes) -> None:
        with self.writer(path) as out:
            out.write(data)

    def commit(self, path: str, data: bytes) -> None:
        """Writes the record, ``path`` included, then ``path``: the file whose presence commits the unit."""
        self.sums[relative(self.root, path)] = Sum(len(data), hashlib.sha256(data).hexdigest())
        write_record(self.record, self.sums)
        storage.write_atomic(path, data)


def write_record(path: str, sums: dict[str, Sum]) -> None:
    document = {"format": FORMAT, "version": VERSION, "files": {name: asdict(s) for name, s in sorted(sums.items())}}
    storage.write_atomic(path, json.dumps(document, indent=1, sort_keys=True).encode())


def read_record(path: str) -> dict[str, Sum] | None:
    """The recorded sums by relative path; None when there is no record (files written before records were)."""
    if not storage.exists(path):
        return None
    try:
        document = json.loads(storage.read_bytes(path))
        if document.get("format") != FORMAT or document.get("version", 0) > VERSION:
            raise ValueError("not a checksum record of a version this mmindex reads")
        sums = {name: Sum(int(s["bytes"]), str(s["sha256"])) for name, s in document["files"].items()}
        outside = [name for name in sums if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/")
                   or "://" in name]
        if outside:
            raise ValueError(f"it names a file outside the dataset: {outside[0]!r}")
        return sums
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise RecordUnreadable(f"unreadable checksum record ({err})") from None


def unit_problem(root: str, record: str) -> tuple[str, str] | None:
    """The cheap check every stage makes before it reads a committed unit: each recorded file is there and of its
    recorded size (digests are `mmindex check`'s). (path, what is wrong), or None; None too with no record."""
    try:
        sums = read_record(record) or {}
    except RecordUnreadable:
        return record, "an unreadable checksum record"
    for name, recorded in sorted(sums.items()):
        path = storage.join(root, name)
        try:
            found = storage.size(path)
        except FileNotFoundError:
            return path, "missing"
        if found != recorded.bytes:
            return path, f"{found:,} bytes, {recorded.bytes:,} recorded"
    return None


def file_sum(path: str) -> Sum:
    """Size and digest of a file as it is now, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with storage.open_read(path) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return Sum(size, digest.hexdigest())


def mismatch(found: Sum, recorded: Sum) -> str | None:
    """How a file differs from its record, in words; None when it matches."""
    if found.bytes != recorded.bytes:
        return f"wrong size: {found.bytes:,} bytes, {recorded.bytes:,} recorded"
    if found.sha256 != recorded.sha256:
        return f"wrong sha256: {found.sha256[:12]}..., {recorded.sha256[:12]}... recorded"
    return None
