"""The elements that flow through the ingest pipeline.

They carry references to bytes (a file, or a byte range inside an uncompressed tar), not the bytes,
so that shuffles stay small on any runner; only members of compressed tars travel inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Member:
    """One file of a sample: where its bytes are and what type it claims to be."""

    ext: str
    path: str | None = None
    offset: int = 0
    size: int | None = None
    data: bytes | None = None


@dataclass(frozen=True)
class Candidate:
    """Files found together that may form one sample (or an input already known to be bad)."""

    source: str
    members: tuple[Member, ...] = ()
    caption: str | None = None
    meta: dict[str, Any] | None = None
    problem: tuple[str, str] | None = None


@dataclass(frozen=True)
class Reject:
    source: str
    reason: str
    detail: str


@dataclass(frozen=True)
class SampleRecord:
    """A validated sample: its key, where each member's bytes are, their digests, and its parquet row."""

    key: str
    source: str
    members: dict[str, Member]
    digests: dict[str, str]
    sizes: list[int]
    row: dict[str, Any] = field(default_factory=dict)
