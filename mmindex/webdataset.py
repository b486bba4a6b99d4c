"""The webdataset side of the format: how a member's name gives its sample key, and writing shard tars.

Tars are written byte-for-byte reproducibly (fixed member order, times, owners and modes), so the same
samples always give the same shard.
"""

from __future__ import annotations

import io
import posixpath
import tarfile
from collections.abc import Iterable
from typing import BinaryIO

BLOCK = 512


def split_key(name: str) -> tuple[str, str]:
    """webdataset's rule: ``dir/key.ext`` -> (``dir/key``, ``ext``), the key ending at the file name's first dot."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext


def tar_member_bytes(size: int) -> int:
    """Bytes one member of ``size`` bytes takes in a tar: a header block plus the data padded to blocks."""
    return BLOCK + -(-size // BLOCK) * BLOCK


def write_tar(out: BinaryIO, samples: Iterable[tuple[str, dict[str, bytes]]]) -> None:
    """Writes ``KEY.EXT`` members, samples in the given order and each sample's members sorted by EXT."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext in sorted(members):
                data = members[ext]
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
