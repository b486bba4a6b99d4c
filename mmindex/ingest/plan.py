"""Deterministic sharding: the same set of samples always lands in the same shards.

Samples are ordered by key (a content digest, so the order is a fair shuffle of the corpus) and cut into
shards of at most ``max_samples`` samples and about ``max_bytes`` bytes of tar.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmindex.ingest.records import DUPLICATE, Placed, Reject, Winner
from mmindex.sizes import is_size, parse_size
from mmindex.webdataset import tar_member_bytes

DEFAULT_SHARD_SIZE = "10000,1GiB"


@dataclass(frozen=True)
class ShardSize:
    max_samples: int | None = 10_000
    max_bytes: int | None = 2**30

    @classmethod
    def parse(cls, text: str) -> ShardSize:
        """``10000``, ``500MB``, or both: ``10000,500MB`` (sizes as mmindex.sizes reads them)."""
        samples = nbytes = None
        for part in filter(None, (p.strip() for p in text.split(","))):
            if is_size(part):
                try:
                    nbytes = parse_size(part)
                except ValueError as err:
                    raise ValueError(f"--shard-size: {err}") from None
            elif part.isdigit() and int(part) > 0:
                samples = int(part)
            else:
                raise ValueError(f"--shard-size: {part!r} is neither a positive sample count nor a size like 512MB")
        if samples is None and nbytes is None:
            raise ValueError("--shard-size needs a sample count, a size, or both (e.g. 10000,1GB)")
        return cls(samples, nbytes)

    def small(self, samples: int, nbytes: int) -> bool:
        """Whether a shard holds under a tenth of what a full one would (by every limit set): an ingest into an
        existing dataset starts a new shard, as finished ones are never rewritten, so small additions make small
        shards."""
        return ((self.max_samples is None or samples * 10 < self.max_samples)
                and (self.max_bytes is None or nbytes * 10 < self.max_bytes))


def plan_shards(sizes: list[tuple[str, list[int]]], first_shard: int, size: ShardSize) -> dict[str, int]:
    """Shard number for each key, given each sample's member sizes; shards numbered from ``first_shard``."""
    plan: dict[str, int] = {}
    shard, count, nbytes = first_shard, 0, 0
    for key, member_sizes in sorted(sizes):
        sample_bytes = sum(tar_member_bytes(s) for s in member_sizes)
        full = (size.max_samples is not None and count >= size.max_samples) or (
            size.max_bytes is not None and count and nbytes + sample_bytes > size.max_bytes)
        if full:
            shard, count, nbytes = shard + 1, 0, 0
        plan[key] = shard
        count += 1
        nbytes += sample_bytes
    return plan


def choose_winner(key: str, new: list[tuple[str, list[int]]], present: bool) -> tuple[Winner | None, list[Reject], int]:
    """Per key: the first source by name wins, unless the dataset already holds the key.

    Returns the winner (or None), the duplicates of this run as rejects, and how many candidates the dataset
    already held. Only (source, sizes) pairs are needed here, so a cluster runner shuffles records once.
    """
    new = sorted(new)
    if present:
        return None, [], len(new)
    if not new:
        return None, [], 0
    source, sizes = new[0]
    duplicates = [Reject(other, DUPLICATE, f"same content as {source}") for other, _ in new[1:]]
    return Winner(key, source, sizes), duplicates, 0


def plan_winners(winners: list[Winner], first_shard: int, size: ShardSize) -> list[Placed]:
    """Each winner with the shard it goes into."""
    shards = plan_shards([(w.key, w.sizes) for w in winners], first_shard, size)
    return [Placed(w.key, w.source, shards[w.key]) for w in winners]
