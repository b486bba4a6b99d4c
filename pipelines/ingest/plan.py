"""Deterministic sharding: the same set of samples always lands in the same shards.

Samples are ordered by key (a content digest, so the order is a fair shuffle of the corpus) and cut into
shards of at most ``max_samples`` samples and about ``max_bytes`` bytes of tar.
"""

from __future__ import annotations

from dataclasses import dataclass

from mmindex.shards import tar_member_bytes

DEFAULT_SHARD_SIZE = "10000,1GB"


@dataclass(frozen=True)
class ShardSize:
    max_samples: int | None = 10_000
    max_bytes: int | None = 2**30

    @classmethod
    def parse(cls, text: str) -> ShardSize:
        """``10000``, ``500MB``, or both: ``10000,500MB`` (units: KB, MB, GB, TB, powers of 1024)."""
        samples = nbytes = None
        for part in filter(None, (p.strip().upper() for p in text.split(","))):
            unit = next((u for u in ("KB", "MB", "GB", "TB") if part.endswith(u)), None)
            number = part[: -len(unit)] if unit else part
            try:
                value = float(number) if unit else int(number)
            except ValueError:
                raise ValueError(f"--shard-size: {part!r} is neither a sample count nor a size like 512MB") from None
            if value <= 0:
                raise ValueError(f"--shard-size: {part!r} must be positive")
            if unit:
                nbytes = int(value * 1024 ** (("KB", "MB", "GB", "TB").index(unit) + 1))
            else:
                samples = int(value)
        if samples is None and nbytes is None:
            raise ValueError("--shard-size needs a sample count, a size, or both (e.g. 10000,1GB)")
        return cls(samples, nbytes)


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
