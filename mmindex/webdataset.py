"""The webdataset side of the format: how a member's name gives its sample key, and writing shard tars.

Tars are written byte-for-byte reproducibly (fixed member order, times, owners and modes), so the same
samples always give the same shard.
"""

from __future__ import annotations

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


def _ustar_header(name: str, size: int) -> bytes:
    """The header tarfile writes for a regular file with mtime 0, mode 644 and no owner; built from a template
    because tarfile's general code was most of the cost of writing a shard."""
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > 100 or not encoded.isascii() or size >= 8**11:  # rare: tarfile's own rules (prefix, ...)
        return _tarinfo(name, size).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    size_field = b"%011o\x00" % size
    checksum = _TEMPLATE_SUM + sum(encoded) + sum(size_field)  # the byte sum, its own field counted as spaces
    return b"".join((encoded, bytes(100 - len(encoded)), _TEMPLATE[100:124], size_field, _TEMPLATE[136:148],
                     b"%06o\x00 " % checksum, _TEMPLATE[156:]))


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


_TEMPLATE = _tarinfo("", 0).tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")  # no name, size 0
_TEMPLATE_SUM = sum(_TEMPLATE[:124]) + sum(_TEMPLATE[136:148]) + 8 * ord(" ") + sum(_TEMPLATE[156:])


def write_tar(out: BinaryIO, samples: Iterable[tuple[str, dict[str, bytes]]]) -> None:
    """Writes ``KEY.EXT`` members, samples in the given order and each sample's members sorted by EXT.

    The bytes are exactly those of tarfile in USTAR format (two zero blocks, then zeros to a 10 KiB record).
    Members are gathered into writes of about a megabyte: each write (and the digest a HashingWriter takes of
    it) releases the GIL once for a long stretch, rather than three times per member for short ones, which is
    what lets two shards be written at once on two threads.
    """
    gathered: list[bytes] = []
    gathered_bytes = written = 0
    for key, members in samples:
        for ext in sorted(members):
            data = members[ext]
            padding = _ZEROS[:-len(data) % BLOCK]
            gathered += (_ustar_header(f"{key}.{ext}", len(data)), data, padding)
            gathered_bytes += BLOCK + len(data) + len(padding)
            if gathered_bytes >= _GATHERED:
                out.write(b"".join(gathered))
                written += gathered_bytes
                gathered, gathered_bytes = [], 0
    written += gathered_bytes + 2 * BLOCK
    gathered.append(bytes(2 * BLOCK + -written % tarfile.RECORDSIZE))
    out.write(b"".join(gathered))


_ZEROS = bytes(BLOCK)
_GATHERED = 1 << 20
