"""File access through Beam's FileSystems, so every stage works on local disks and object stores alike
(local paths take plain os calls: faster, and no Beam import for local work).

Writes are atomic: bytes go to a hidden temporary name beside the target and are renamed into place
only once complete, so a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import functools
import glob as pyglob
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO


@functools.cache
def _beam() -> tuple[Any, Any]:
    """Beam's FileSystems and CompressionTypes, imported on first use: local work (such as a search) does not
    pay for importing Beam. Beam warns at import about optional cloud clients it lacks; that is noise."""
    root_level = logging.getLogger().level
    logging.getLogger().setLevel(max(root_level, logging.ERROR))
    try:
        from apache_beam.io.filesystem import CompressionTypes
        from apache_beam.io.filesystems import FileSystems
    finally:
        logging.getLogger().setLevel(root_level)
    return FileSystems, CompressionTypes


TEMP_MARK = ".tmp-"


def readable(text: str) -> str:
    """Text that is valid UTF-8 whatever a file name held: undecodable bytes (which Python keeps as
    surrogates) are shown as ``\\xNN``. For sources and messages only, never for opening files."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base, *parts)
    return _beam()[0].join(base, *parts)


def is_local(path: str) -> bool:
    return "://" not in path


def exists(path: str) -> bool:
    return os.path.exists(path) if is_local(path) else _beam()[0].exists(path)


def size(path: str) -> int:
    """Size in bytes; FileNotFoundError when nothing is there."""
    if is_local(path):
        return os.stat(path).st_size
    found = _beam()[0].match([path])[0].metadata_list
    if not found:
        raise FileNotFoundError(2, "No such file", path)
    return found[0].size_in_bytes


def list_files(pattern: str) -> list[tuple[str, int]]:
    """(path, size) of every file matching ``pattern``, sorted by path; empty when nothing matches."""
    return sorted((m.path, m.size_in_bytes) for m in _beam()[0].match([pattern])[0].metadata_list)


def glob(pattern: str) -> list[str]:
    """Paths of the files matching ``pattern``, sorted; an empty list when nothing matches."""
    if is_local(pattern) and "**" not in pattern:  # the common case, without importing Beam
        return sorted(p for p in pyglob.glob(pattern) if os.path.isfile(p))
    return [path for path, _ in list_files(pattern)]


def open_read(path: str) -> BinaryIO:
    if is_local(path):
        return open(path, "rb")
    filesystems, compression = _beam()
    return filesystems.open(path, compression_type=compression.UNCOMPRESSED)


def read_bytes(path: str, offset: int = 0, length: int | None = None) -> bytes:
    """The whole file, or ``length`` bytes from ``offset`` (a member inside an uncompressed tar)."""
    if is_local(path) and length is not None:  # three system calls: each releases and retakes the GIL
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, length, offset)
            while len(data) < length and (more := os.pread(fd, length - len(data), offset + len(data))):
                data += more  # a read may return less than asked
            return data
        finally:
            os.close(fd)
    if is_local(path):  # unbuffered: one read into the result, no buffer object
        with open(path, "rb", buffering=0) as f:
            if offset:
                f.seek(offset)
            return f.readall()
    with open_read(path) as f:
        if offset:
            f.seek(offset)
        return f.read() if length is None else f.read(length)


def delete(paths: list[str]) -> None:
    """Removes files (a local folder with what it holds); a local path already gone is not an error."""
    remote = [p for p in paths if not is_local(p)]
    for path in (p for p in paths if is_local(p)):
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    if remote:
        _beam()[0].delete(remote)


def temp_name(path: str) -> str:
    """A hidden name beside ``path`` that no reader's glob (``*.tar``, ``*.parquet``) matches."""
    directory, name = os.path.split(path) if is_local(path) else _beam()[0].split(path)
    return join(directory, f"{TEMP_MARK}{name}-{uuid.uuid4().hex}")


class HashingWriter:
    """Wraps a writable file and hashes what passes through, so a file's digest costs no second read. A failed
    write (a full disk, say) names the file being written, which the operating system's error does not."""

    def __init__(self, raw: BinaryIO, path: str):
        self._raw, self.path = raw, path
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        with naming(self.path):
            return self._raw.write(data)

    def close(self) -> None:
        with naming(self.path):
            self._raw.close()

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:  # for Arrow's writers, which stream into it
        return self._raw.closed

    def flush(self) -> None:
        self._raw.flush()


@contextlib.contextmanager
def atomic_writer(path: str) -> Iterator[HashingWriter]:
    """Yields a writer whose bytes appear at ``path`` only if the block completes."""
    temp = temp_name(path)
    if is_local(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if is_local(path):
        raw = open(temp, "wb")  # noqa: SIM115 (closed below, on success and on failure)
    else:
        filesystems, compression = _beam()
        raw = filesystems.create(temp, compression_type=compression.UNCOMPRESSED)
    writer = HashingWriter(raw, path)
    try:
        yield writer
        writer.close()
    except BaseException:
        with contextlib.suppress(OSError):  # closing may fail again on a full disk: the temp goes all the same
            raw.close()
        delete([temp])
        raise
    if is_local(path):
        os.replace(temp, path)
    else:
        if exists(path):
            delete([path])
        _beam()[0].rename([temp], [path])


@contextlib.contextmanager
def naming(path: str) -> Iterator[None]:
    """Adds ``path`` to an OSError that lacks a file name."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise type(err)(err.errno, err.strerror, path) from None
        raise


def write_atomic(path: str, data: bytes) -> None:
    with atomic_writer(path) as out:
        out.write(data)
