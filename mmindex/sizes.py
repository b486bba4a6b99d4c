"""Byte sizes as people write them, read and printed the same way by every command; and counts of things.

``KB MB GB TB`` are powers of 1000 and ``KiB MiB GiB TiB`` powers of 1024, as their names say
(``--shard-size 512MB`` and ``--max-memory 512MB`` are the same 512,000,000 bytes). Letter case is not
significant, and a bare number is bytes.
"""

from __future__ import annotations

import re

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
HELP = "KB, MB, GB, TB are powers of 1000; KiB, MiB, GiB, TiB powers of 1024"
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([A-Z]*)")


def parse_size(text: str) -> int:
    """Bytes in ``text``: '4GB', '512MiB', '1.5GB' or '1000'. ValueError, saying what is accepted, otherwise."""
    match = _SIZE.fullmatch(text.strip().upper())
    if not match or match[2] not in UNITS:
        raise ValueError(f"{text!r} is not a size: give bytes such as 4GB, 512MB or 2GiB ({HELP})")
    size = int(float(match[1]) * UNITS[match[2]])
    if size <= 0:
        raise ValueError(f"{text!r}: a size must be at least one byte")
    return size


def is_size(text: str) -> bool:
    """Whether ``text`` has a unit (so that '10000' stays a count where counts and sizes mix)."""
    match = _SIZE.fullmatch(text.strip().upper())
    return bool(match and match[2])


def format_size(n: float) -> str:
    """'930 B', '30.0 KB', '1.2 GB': decimal units, the unit chosen so the figure is never shown as 0.0."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 sample', '2 samples', '1,204 shards': what every message says of a count (never '1 samples')."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
