"""Prepared batches cross from decode processes through shared memory: nothing changes on the way, the worker's
blocks are reused batch after batch (no new block once the first batches made them), and no block outlives the
run, whether every batch is read or the run stops first."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from mmindex.embed.shard import Chunk, Item, prepare_chunk
from mmindex.embed.steps import DecodePool
from mmindex.embed.transfer import Blocks, SharedBatch, pack
from mmindex.media import Rejected


def shared_blocks() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def images(seed: int, count: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (3, 224, 224), dtype=np.uint8) for _ in range(count)]


def assert_same(back: list, prepared: list) -> None:
    assert [type(x) for x in back] == [type(x) for x in prepared]
    for before, after in zip(prepared, back, strict=True):
        if isinstance(before, np.ndarray):
            assert after.dtype == before.dtype
            np.testing.assert_array_equal(after, before)
        else:
            assert (after.reason, after.detail) == (before.reason, before.detail)


def test_a_batch_comes_back_as_it_was_with_rejects_in_place_and_its_block_is_kept_then_removed():
    prepared = [*images(0, 5), Rejected("unreadable image", "cut short"), *images(1, 4)]
    blocks = Blocks(most=2)
    assert blocks.take() is None  # nothing made yet: the decode process makes the block
    packed = pack(prepared)
    assert isinstance(packed, SharedBatch)
    with blocks.received(packed) as back:
        assert_same(back, prepared)
    assert blocks.kept == {packed.block} and blocks.take() == packed.block  # free again, and handed out next
    again = pack(images(2), into=packed.block)
    assert again.block == packed.block  # filled where it was given
    with blocks.received(again) as back:
        assert_same(back, images(2))
    blocks.close()
    with pytest.raises(FileNotFoundError):
        pack(images(3), into=packed.block)


def test_small_batches_and_texts_travel_as_they_are():
    small = images(0, 2)  # 300 KB: the pipe is as fast
    assert pack(small) is small
    texts = ["a cat"] * 500
    assert pack(texts) is texts


def test_arrays_of_different_shapes_and_dtypes_share_one_block():
    """JPEG files' bytes (1-D, each its own length) beside pixels a CPU preparer made, and float features."""
    rng = np.random.default_rng(2)
    mixed = [*images(0, 8), rng.integers(0, 256, 70_001, dtype=np.uint8), Rejected("corrupt image", "bad"),
             rng.random((3, 17), dtype=np.float32), np.zeros((3, 32, 32), np.uint8)]
    blocks = Blocks(most=1)
    blocks.take()
    with blocks.received(pack(mixed)) as back:
        assert_same(back, mixed)
    blocks.close()


def test_a_batch_that_outgrows_its_block_comes_in_a_new_one_which_replaces_it():
    blocks = Blocks(most=1)
    used = []
    for count in (8, 16, 8, 24):  # 1.2, 2.4, 1.2 and 3.6 MB
        given = blocks.take()
        packed = pack(images(count, count), into=given)
        with blocks.received(packed) as back:
            assert_same(back, images(count, count))
        used.append((given, packed.block))
        assert blocks.kept == {packed.block}  # the larger block, in place of the one the batch outgrew
    (none, first), (too_small, second), (fits, third), (outgrown, fourth) = used
    assert none is None and too_small == first != second and fits == second == third and outgrown == third != fourth
    for removed in (first, second):
        with pytest.raises(FileNotFoundError):
            pack(images(0), into=removed)
    blocks.close()


class Pixels:
    """A preparer for the pool's tests: an image made from the file's bytes (picklable, as decode processes need)."""

    def __call__(self, data: bytes) -> np.ndarray | Rejected:
        return images(data[0], 1)[0]


@pytest.fixture
def shard_of_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(64)))
    return path


def chunks_of(path: Path, count: int, per_chunk: int = 8) -> list[Chunk]:
    items = [Item(f"k{i}", "image", i % 64, 1) for i in range(count * per_chunk)]
    return [Chunk(str(path), "image", items[i:i + per_chunk]) for i in range(0, len(items), per_chunk)]


def test_decode_processes_hand_back_every_batch_in_order_through_blocks_reused_shard_after_shard(shard_of_bytes):
    before = shared_blocks()
    pool = DecodePool(2, {"image": Pixels()})
    try:
        kept = []
        for _ in range(2):  # two shards
            jobs = chunks_of(shard_of_bytes, 12)
            batches = pool(jobs)
            for chunk, batch in zip(jobs, batches, strict=True):
                with batch as prepared:
                    assert_same(prepared, prepare_chunk(chunk, {"image": Pixels()}))
            kept.append(set(pool.blocks.kept))
        assert 0 < len(kept[0]) <= pool.ahead + 2 and kept[1] == kept[0]  # the second shard made no block
    finally:
        pool.close()
    assert shared_blocks() <= before


def test_a_shard_that_stops_early_leaves_every_block_free_and_the_run_leaves_none_behind(shard_of_bytes):
    before = shared_blocks()
    pool = DecodePool(2, {"image": Pixels()})
    try:
        batches = pool(chunks_of(shard_of_bytes, 10))
        with next(batches) as prepared:
            assert len(prepared) == 8
        batches.close()  # as when the consumer fails: the batches decoded ahead are released
        assert not pool.blocks.handed and set(pool.blocks.free) == pool.blocks.kept
        jobs = chunks_of(shard_of_bytes, 3)
        for chunk, batch in zip(jobs, pool(jobs), strict=True):  # the next shard still reads right
            with batch as prepared:
                assert_same(prepared, prepare_chunk(chunk, {"image": Pixels()}))
    finally:
        pool.close()
    assert shared_blocks() <= before


def test_where_shared_memory_is_short_a_batch_goes_through_the_pipe_and_the_user_is_told(monkeypatch):
    """A container's /dev/shm is 64 MB unless given more, and writing a block past its end kills the process
    (SIGBUS): a batch no free block holds goes through the pipe instead when a new block would not fit."""
    from mmindex.embed import transfer

    class Full:
        f_bavail, f_frsize = 100, 4096   # 400 KB free

    monkeypatch.setattr(transfer.os, "statvfs", lambda _: Full)
    transfer._say_shared_memory_is_short.cache_clear()
    batch = images(0)   # 1.2 MB
    said: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("mmindex").addHandler(handler)  # the CLI's setup stops the logger's records at its own handler
    try:
        assert pack(batch) is batch and isinstance(pack(images(1)), list)  # said once, not per batch
    finally:
        logging.getLogger("mmindex").removeHandler(handler)
    [said] = said
    assert "/dev/shm has no room" in said and "--shm-size" in said
    blocks = Blocks(most=1)
    monkeypatch.undo()
    blocks.take()
    with blocks.received(pack(batch)) as back:  # with room, a block as before
        assert_same(back, batch)
    given = blocks.take()
    monkeypatch.setattr(transfer.os, "statvfs", lambda _: Full)
    assert pack(batch, into=given).block == given   # a free block that holds it is used whatever the room left
    blocks.close()
