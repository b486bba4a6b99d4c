"""Prepared batches cross from decode processes through shared memory: nothing changes on the way, and no
block outlives the run, whether it is read or the run stops first."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import shared_memory

import numpy as np
import pytest

from mmindex.embed.transfer import SharedBatch, pack, receive, release
from mmindex.media import Rejected
from mmindex.parallel import ordered_map


def shared_blocks() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def images(seed: int, count: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (3, 224, 224), dtype=np.uint8) for _ in range(count)]


def test_a_batch_comes_back_as_it_was_with_rejects_in_place_and_its_block_removed():
    prepared = [*images(0, 5), Rejected("unreadable image", "cut short"), *images(1, 4)]
    packed = pack(prepared)
    assert isinstance(packed, SharedBatch)
    back = receive(packed)
    assert [type(x) for x in back] == [type(x) for x in prepared]
    for before, after in zip(prepared, back, strict=True):
        if isinstance(before, np.ndarray):
            np.testing.assert_array_equal(after, before)
        else:
            assert after is before or (after.reason, after.detail) == (before.reason, before.detail)
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=packed.block)


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
    packed = pack(mixed)
    assert isinstance(packed, SharedBatch)
    back = receive(packed)
    assert isinstance(back[9], Rejected)
    for before, after in zip(mixed, back, strict=True):
        if isinstance(before, np.ndarray):
            assert after.dtype == before.dtype
            np.testing.assert_array_equal(after, before)


def _shared_images(seed: int) -> SharedBatch | list:
    return pack(images(seed))


def test_a_run_that_stops_early_leaves_no_block_behind():
    before = shared_blocks()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        batches = ordered_map(pool, _shared_images, range(6), ahead=4, discard=release)
        first = receive(next(batches))
        assert len(first) == 8
        batches.close()  # as when the consumer fails: the batches decoded ahead are released
    assert shared_blocks() <= before
