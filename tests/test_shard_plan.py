"""Shard sizing: what --shard-size accepts, and how samples are cut into shards."""

from __future__ import annotations

import pytest

from mmindex.ingest.plan import ShardSize, plan_shards


@pytest.mark.parametrize(("text", "expected"), [
    ("1000", ShardSize(1000, None)),
    ("512MB", ShardSize(None, 512 * 10**6)),
    ("512MiB", ShardSize(None, 512 * 2**20)),
    ("10000, 1GB", ShardSize(10000, 10**9)),
    ("1.5kib", ShardSize(None, 1536)),
])
def test_shard_size_parses_counts_and_sizes(text, expected):
    assert ShardSize.parse(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-5", "ten", "5XB", "0MB", "1.5"])
def test_shard_size_refuses_nonsense(text):
    with pytest.raises(ValueError, match="--shard-size"):
        ShardSize.parse(text)


def test_plan_respects_sample_and_byte_limits_in_key_order():
    sizes = [(f"k{i:02d}", [1000]) for i in range(10)]  # 1,536 tar bytes each
    plan = plan_shards(list(reversed(sizes)), first_shard=7, size=ShardSize(4, 4000))
    assert [plan[f"k{i:02d}"] for i in range(10)] == [7, 7, 8, 8, 9, 9, 10, 10, 11, 11]
    plan = plan_shards(sizes, first_shard=0, size=ShardSize(3, None))
    assert [plan[f"k{i:02d}"] for i in range(10)] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]


def test_a_sample_larger_than_a_shard_gets_a_shard_of_its_own():
    plan = plan_shards([("a", [10]), ("b", [10**6]), ("c", [10])], first_shard=0, size=ShardSize(None, 10_000))
    assert plan == {"a": 0, "b": 1, "c": 2}
