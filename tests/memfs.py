"""An object store in memory (``mem://``) registered with Beam's FileSystems, so the tests exercise the
code paths that gs:// or s3:// datasets take: no directories, no local paths, renames through Beam."""

from __future__ import annotations

import io
from pathlib import Path
from typing import ClassVar

from apache_beam.io.filesystem import BeamIOError, CompressionTypes, FileMetadata, FileSystem


class _Object(io.BytesIO):
    def __init__(self, store: dict[str, bytes], path: str):
        super().__init__()
        self._store, self._path = store, path

    def close(self) -> None:
        if not self.closed:
            self._store[self._path] = self.getvalue()
        super().close()


class MemoryFileSystem(FileSystem):
    """Flat keys to bytes, like an object store. Beam finds it by its scheme, ``mem``."""

    objects: ClassVar[dict[str, bytes]] = {}

    @classmethod
    def scheme(cls) -> str:
        return "mem"

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str):
        for path, data in sorted(self.objects.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), 0.0)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        assert compression_type == CompressionTypes.UNCOMPRESSED
        return _Object(self.objects, path)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        assert compression_type == CompressionTypes.UNCOMPRESSED
        if path not in self.objects:
            raise BeamIOError("open failed", {path: FileNotFoundError(path)})
        return io.BytesIO(self.objects[path])

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names, strict=True):
            self.objects[destination] = self.objects[source]

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path: str) -> bool:
        return path in self.objects or any(p.startswith(path.rstrip("/") + "/") for p in self.objects)

    def size(self, path: str) -> int:
        return len(self.objects[path])

    def last_updated(self, path: str) -> float:
        return 0.0

    def checksum(self, path: str) -> str:
        return str(hash(self.objects[path]))

    def metadata(self, path: str) -> FileMetadata:
        return FileMetadata(path, len(self.objects[path]), 0.0)

    def delete(self, paths) -> None:
        for path in paths:
            self.objects.pop(path, None)

    def report_lineage(self, path, lineage) -> None:
        pass


def upload(folder: Path, prefix: str) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            MemoryFileSystem.objects[f"{prefix}/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
