"""The member table of a shard tar: each member's name, sample key, extension and byte range.

Members are named by webdataset's rule (mmindex.webdataset): ``KEY.EXT``. Embed reads a shard's items from
this table, the server streams members by their byte range, and check compares the keys with the samples
parquet.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

from mmindex import storage
from mmindex.webdataset import split_key


@dataclass(frozen=True)
class ShardMember:
    name: str      # KEY.EXT
    key: str
    ext: str
    offset: int    # of the member's data in the tar
    size: int


def shard_members(path: str) -> list[ShardMember]:
    """Every regular file of a shard tar, in tar order, from its headers (the data is skipped, not read;
    tarfile still notices a tar cut short)."""
    with storage.open_read(path) as raw, tarfile.open(fileobj=raw, mode="r:") as tar:
        return [ShardMember(member.name, *split_key(member.name), member.offset_data, member.size)
                for member in tar if member.isfile()]
