"""A sample's members streamed straight from its shard tar by byte range, found by key (never by a path).

Each shard's member table (name -> offset, size) is read from the tar headers the first time a member of that
shard is asked for, and kept for the most recently used shards. Keys are content digests, so a member's bytes
never change: responses may be cached for good.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from mmindex.dataset.members import shard_members
from mmindex.modalities import CONTENT_TYPES, MODALITIES, modality_of
from mmindex.serve.catalog import NotFound, ServedDataset

CHUNK = 256 * 1024
MEMBERS = (*MODALITIES, "json")   # what a URL names; "json" is the metadata member
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")   # longer numbers are no range of a member: ignored


class RangeNotSatisfiable(ValueError):
    pass


@dataclass(frozen=True)
class Member:
    path: str           # the shard tar
    offset: int         # of the member's data in the tar
    size: int
    ext: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.ext]

    def read(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end] (inclusive, as HTTP ranges count) in chunks."""
        end = self.size - 1 if end is None else end
        with open(self.path, "rb") as tar:
            tar.seek(self.offset + start)
            left = end - start + 1
            while left > 0:
                chunk = tar.read(min(CHUNK, left))
                if not chunk:
                    raise OSError(f"{self.path} ends before member data it lists: the shard is damaged")
                left -= len(chunk)
                yield chunk

    def bytes(self) -> bytes:
        return b"".join(self.read())


def member_kind(ext: str) -> str:
    kind = modality_of(ext)
    return "json" if kind == "meta" else kind or ""


def find_member(served: ServedDataset, key: str, member: str) -> Member:
    if member not in MEMBERS:
        raise NotFound(f"no member {member!r}: ask for one of {', '.join(MEMBERS)}")
    sample = served.sample(key)
    ext = next((e for e in sample.members if member_kind(e) == member), None)
    if ext is None:
        raise NotFound(f"sample {key!r} has no {member} (it has {', '.join(map(member_kind, sample.members))})")
    path = served.dataset.shard_path(sample.shard)
    offset, size = _shard_table(path)[f"{key}.{ext}"]
    return Member(path, offset, size, ext)


@lru_cache(maxsize=64)
def _shard_table(path: str) -> dict[str, tuple[int, int]]:
    """Member name -> (data offset, size), kept for the most recently used shards."""
    return {member.name: (member.offset, member.size) for member in shard_members(path)}


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (start, end) a Range header asks for; None to send the whole member (no header, or one
    HTTP lets a server ignore: several ranges, another unit, malformed). RangeNotSatisfiable when the range
    lies outside the member."""
    match = _RANGE.fullmatch((header or "").strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last N bytes
        if int(last) == 0:
            raise RangeNotSatisfiable
        return max(size - int(last), 0), size - 1
    start, end = int(first), min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:  # syntactically invalid (RFC 9110 14.1.1): the header is ignored
        return None
    if start >= size:
        raise RangeNotSatisfiable
    return start, end
