"""What flows between the ingest steps, under either executor, and what an executor hands back.

Members carry references to bytes (a file, or a byte range inside an uncompressed tar) so that a cluster
runner's shuffles stay small; small files, members of compressed tars and, in the local executor, checked
bytes within its memory budget travel inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mmindex.stages import Compact
from mmindex.storage import readable


@dataclass(frozen=True)
class Member(Compact):
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
    problem: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        # Sources are shown to people and stored in parquet: always valid UTF-8, even for odd file names.
        object.__setattr__(self, "source", readable(self.source))
        if self.problem:
            object.__setattr__(self, "problem", (self.problem[0], readable(self.problem[1])))


DUPLICATE = "duplicate"  # the reason of a Reject that is an exact copy of an ingested sample


@dataclass(frozen=True)
class Reject:
    source: str
    reason: str
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", readable(self.detail))


@dataclass(frozen=True)
class SampleRecord(Compact):
    """A validated sample: its key, where each member's bytes are, their digests, and its parquet row."""

    key: str
    source: str
    members: dict[str, Member]
    digests: dict[str, str]
    sizes: list[int]
    row: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardWritten:
    """A committed shard: its name, samples, tar bytes and the tar's sha256."""

    name: str
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class IngestOutcome:
    """What an executor hands back to the driver: the shards it committed and every input it did not take."""

    shards: list[ShardWritten]
    rejects: list[Reject]       # bad inputs and duplicates within the run, each with a reason
    found: int                  # candidate samples discovered
    already_present: int        # candidates whose content the dataset already held


# --- what else flows between the steps (mmindex.ingest.steps) --------------------------------------------

@dataclass(frozen=True)
class Source:
    """A SRC argument to discover."""

    path: str


@dataclass(frozen=True)
class Existing:
    """The samples parquet of a committed shard: its keys are already in the dataset."""

    path: str


@dataclass(frozen=True)
class Found:
    """Candidates discovered together, whose checks parse: the unit that executors spread over workers."""

    candidates: list[Candidate]


@dataclass(frozen=True)
class FoundMedia:
    """Candidates discovered together whose checks decode audio or an image other than a JPEG."""

    candidates: list[Candidate]


@dataclass(frozen=True)
class Present(Compact):
    key: str


@dataclass(frozen=True)
class Offer(Compact):
    """A checked sample's claim on its key: only what choosing a winner needs, so records travel once."""

    key: str
    source: str
    sizes: list[int]


@dataclass(frozen=True)
class Winner(Compact):
    """The sample that a key's offers chose: the first source by name."""

    key: str
    source: str
    sizes: list[int]


@dataclass(frozen=True)
class Placed(Compact):
    """A key's winner and the shard it goes into."""

    key: str
    source: str
    shard: int


@dataclass(frozen=True)
class ShardPart(Compact):
    shard: int
    record: SampleRecord


@dataclass(frozen=True)
class Counted:
    """A count for the outcome: candidates found, or candidates whose content the dataset already held."""

    what: str  # "found" or "already_present"
    n: int
