"""An IVF index built from parts: the same bytes on Beam as in-process, an --update that makes parts of the new
shards alone (on the quantizer it was trained with), lists on disk that a search memory-maps, and a build killed
while it merges that leaves the published index serving and is finished by the same command."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from test_index_search import clustered, image_shards

from conftest import add_shard, synthetic_dataset, synthetic_space_file
from mmindex.dataset.indexes import published
from mmindex.index.parts import add, merged_on_disk
from mmindex.index.run import IndexSettings, build_indexes
from mmindex.index.settings import BuildSettings
from mmindex.index.store import IndexFiles
from mmindex.index.vectors import Rows, Unmapped
from pipelines.executor import BeamExecutor

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = BuildSettings(index_type="IVF64,SQ8")   # a compressed IVF index: parts, on-disk lists, re-ranking


def generation_digests(files: IndexFiles) -> dict[str, str]:
    """sha256 of each file of the published generation but info.json (it holds the build time) and the checksum
    record (it holds info.json's digest)."""
    folder = Path(published(files.root).folder)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.name not in ("info.json", "checksums.json", ".readers")}


def build(dataset: Path, executor=None, update: bool = False, settings: BuildSettings = SETTINGS):
    return build_indexes(IndexSettings(str(dataset), synthetic_space_file(dataset.parent), settings, update),
                         executor=executor).indexes[0]


def test_the_lists_are_on_disk_and_beam_builds_the_same_bytes(tmp_path: Path):
    vectors = clustered(12_000, 32, 60, seed=3)
    stores = {name: synthetic_dataset(tmp_path / name / "ds", image_shards(vectors, 3_000))
              for name in ("local", "beam")}
    local = build(tmp_path / "local" / "ds")
    beam = build(tmp_path / "beam" / "ds", BeamExecutor([]))
    local_files = IndexFiles(stores["local"], "image")
    digests = generation_digests(local_files)
    assert set(digests) == {"index.faiss", "lists.ivfdata", "keys.arrow"}
    assert digests == generation_digests(IndexFiles(stores["beam"], "image"))
    assert local.vectors == beam.vectors == 12_000 and local.recall_at_10 == beam.recall_at_10 >= 0.9
    # the search memory-maps the lists: they are not in the index file, which holds the quantizer alone
    folder = Path(published(local_files.root).folder)
    codes_and_ids = 12_000 * (32 + 8)  # SQ8: a byte a component, then the id
    assert (folder / "lists.ivfdata").stat().st_size == codes_and_ids > (folder / "index.faiss").stat().st_size
    index, keys, _ = local_files.load()
    _, found = index.search(vectors[:20], 1)
    assert [keys[i] for i in found[:, 0]] == [f"k{i:07d}" for i in range(20)]
    assert not list((tmp_path / "local" / "ds" / ".scratch").glob("index-*")), "the build's parts are removed"


def test_an_update_makes_parts_of_the_new_shards_alone_on_the_same_quantizer(tmp_path: Path):
    vectors = clustered(15_000, 32, 60, seed=4)
    dataset = tmp_path / "ds"
    store = synthetic_dataset(dataset, image_shards(vectors[:12_000], 4_000))
    first = build(dataset)
    files = IndexFiles(store, "image")
    loaded = files.load_published()
    before = faiss.extract_index_ivf(loaded.index.index).quantizer.reconstruct_n(0, 64)
    add_shard(store, 3, image_shards(vectors[12_000:], 3_000, prefix="new")[0])
    updated = build(dataset, update=True)
    info = files.info()
    assert info["parts"] == 1 and updated.vectors == 15_000 and first.type == updated.type
    index, keys, shards = files.load()
    assert np.array_equal(faiss.extract_index_ivf(index.index).quantizer.reconstruct_n(0, 64), before)
    assert keys[:12_000] == [f"k{i:07d}" for i in range(12_000)] and shards[-1] == "000003"
    _, found = index.search(vectors[12_000:12_010], 1)
    assert [keys[i] for i in found[:, 0]] == [f"new{i:07d}" for i in range(10)]
    files.check(keys=True)
    assert build(dataset, update=True).up_to_date


def test_a_build_killed_while_it_merges_leaves_the_last_generation_serving_and_the_rerun_finishes(tmp_path: Path):
    vectors = clustered(60_000, 64, 200, seed=5)
    dataset = tmp_path / "ds"
    store = synthetic_dataset(dataset, image_shards(vectors[:20_000], 10_000))
    build(dataset)
    files = IndexFiles(store, "image")
    serving = published(files.root)
    for number, start in enumerate(range(20_000, 60_000, 10_000), start=2):
        add_shard(store, number, image_shards(vectors[start:start + 10_000], 10_000, prefix=f"s{number}-")[0])
    command = [sys.executable, "-m", "mmindex", "index", str(dataset), "--model", synthetic_space_file(tmp_path),
               "--index-type", "IVF64,SQ8"]
    run = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    new_lists = Path(files.root) / "g000002" / "lists.ivfdata"
    deadline = time.monotonic() + 300
    while not new_lists.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert new_lists.exists(), "the build was killed after its merge began"
    assert published(files.root) == serving
    index, keys, _ = files.load()   # the last generation still answers, whole
    assert index.ntotal == len(keys) == 20_000
    parts = sorted(p.name.rsplit("-", 1)[1] for p in (dataset / ".scratch").glob("index-*.faiss"))
    assert parts == ["000000.faiss", "000001.faiss", "000002.faiss", "000003.faiss", "000004.faiss",
                     "000005.faiss", "trained.faiss"]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "made" not in done.stderr, "the rerun reuses the parts the killed build made"
    index, keys, _ = files.load()
    assert index.ntotal == len(keys) == 60_000 and published(files.root) != serving
    files.check(keys=True)


def test_a_build_reads_vectors_without_mapping_them_and_gets_the_same_values(tmp_path: Path):
    """The build reads embeddings with plain reads (their pages stay in the kernel's cache, not in the process):
    slices, rows in any order and repeated, and rows of rows give what the memory-mapped array gives."""
    array = np.random.default_rng(0).standard_normal((20_000, 7)).astype(np.float16)
    np.save(tmp_path / "v.npy", array)
    unmapped = Unmapped.of(np.load(tmp_path / "v.npy", mmap_mode="r"))
    assert isinstance(unmapped, Unmapped)
    assert np.array_equal(np.asarray(unmapped), array)
    assert np.array_equal(np.asarray(unmapped[100:9_000][5:10]), array[105:110])
    assert len(unmapped[19_990:30_000]) == 10
    for rows in (np.random.default_rng(1).integers(0, 20_000, (50, 13)),   # few: read one by one
                 np.random.default_rng(2).integers(0, 20_000, 5_000),      # many: read in blocks
                 [3, 3, 1]):
        assert np.array_equal(unmapped[rows], array[rows])
    assert np.array_equal(np.asarray(Rows(unmapped, [5, 1, 19_999])), array[[5, 1, 19_999]])


def test_the_merge_writes_what_faiss_merge_writes_in_one_pass_or_many(tmp_path: Path):
    """The merge copies a range of lists per pass (its memory bounded by the budget) into the layout of FAISS's
    own OnDiskInvertedLists merge: the same lists file and index bytes, whatever the passes."""
    vectors = np.random.default_rng(0).standard_normal((30_000, 16)).astype(np.float32)
    trained = faiss.index_factory(16, "IVF32,SQ8", faiss.METRIC_INNER_PRODUCT)
    trained.train(vectors[:5_000])
    parts = []
    for i in range(3):
        part = faiss.clone_index(trained)
        part.add_with_ids(vectors[i * 10_000:(i + 1) * 10_000], np.arange(i * 10_000, (i + 1) * 10_000))
        faiss.write_index(part, str(tmp_path / f"part{i}.faiss"))
        parts.append(str(tmp_path / f"part{i}.faiss"))

    def written(folder: Path, lists: faiss.InvertedLists) -> tuple[bytes, bytes]:
        lists.filename = "lists.ivfdata"
        index = faiss.clone_index(trained)
        faiss.extract_index_ivf(index).replace_invlists(lists, True)
        lists.this.disown()
        faiss.write_index(index, str(folder / "index.faiss"))
        return (folder / "lists.ivfdata").read_bytes(), (folder / "index.faiss").read_bytes()

    ivf = faiss.extract_index_ivf(trained)
    (tmp_path / "faiss").mkdir()
    theirs = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(tmp_path / "faiss" / "lists.ivfdata"))
    sources = [faiss.read_index(p, faiss.IO_FLAG_MMAP) for p in parts]
    pointers = faiss.InvertedListsPtrVector()
    for source in sources:
        pointers.push_back(faiss.extract_index_ivf(source).invlists)
    theirs.merge_from_multiple(pointers.data(), pointers.size(), False)
    expected = written(tmp_path / "faiss", theirs)
    for pass_bytes in (10**9, 20_000):
        folder = tmp_path / f"ours-{pass_bytes}"
        folder.mkdir()
        assert written(folder, merged_on_disk(ivf, parts, str(folder / "lists.ivfdata"), pass_bytes)) == expected


def test_an_index_whose_lists_are_found_through_a_graph_builds_the_same_bytes_twice(tmp_path: Path):
    """Many lists are found through an HNSW graph of the centroids, a graph FAISS builds on many threads in any
    order: built on one, it is the same on every run and executor."""
    vectors = clustered(6_000, 32, 40, seed=8)
    settings = BuildSettings(index_type="IVF64_HNSW32,SQ8")
    stores = {name: synthetic_dataset(tmp_path / name / "ds", image_shards(vectors, 2_000))
              for name in ("local", "beam")}
    local = build(tmp_path / "local" / "ds", settings=settings)
    build(tmp_path / "beam" / "ds", BeamExecutor([]), settings=settings)
    assert local.type == "IVF64_HNSW32,SQ8" and local.recall_at_10 >= 0.9
    digests = generation_digests(IndexFiles(stores["local"], "image"))
    assert "lists.ivfdata" in digests and digests == generation_digests(IndexFiles(stores["beam"], "image"))


@pytest.mark.parametrize("factory", ["IVF32,SQ8", "IVF32,PQ4", "IVF32_HNSW32,Flat", "OPQ4,IVF32,PQ4"])
def test_a_part_made_with_lists_at_their_size_is_the_index_faiss_add_makes(factory):
    """Parts place codes in lists allocated once (FAISS's own add doubles them as they grow): same bytes."""
    vectors = np.random.default_rng(3).standard_normal((20_000, 16)).astype(np.float16)
    trained = faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)
    trained.train(vectors[:8_000].astype(np.float32))
    ours, theirs = faiss.clone_index(trained), faiss.clone_index(trained)
    add(ours, vectors, 500)
    theirs.add_with_ids(vectors.astype(np.float32), np.arange(500, 20_500, dtype=np.int64))
    assert faiss.serialize_index(ours).tobytes() == faiss.serialize_index(theirs).tobytes()


def test_no_more_parts_are_filled_at_once_than_the_budget_was_sized_for(tmp_path: Path, monkeypatch):
    """The chooser sizes codes for PARTS_AT_ONCE parts in memory at once; an executor with more threads (the
    in-process one has 4 on a 4-core machine) still fills no more at once."""
    import threading

    from mmindex.executors.local import LocalExecutor
    from mmindex.index import parts
    from mmindex.index.choose import PARTS_AT_ONCE

    filling, most, lock = 0, 0, threading.Lock()

    def add_slowly(*args):
        nonlocal filling, most
        with lock:
            filling += 1
            most = max(most, filling)
        time.sleep(0.3)  # long enough for every thread of the executor to have started its part
        add(*args)
        with lock:
            filling -= 1

    monkeypatch.setattr(parts, "add", add_slowly)
    dataset = tmp_path / "ds"
    synthetic_dataset(dataset, image_shards(clustered(6_000, 32, 60, seed=5), 1_000))
    built = build(dataset, LocalExecutor(threads=4))
    assert built.vectors == 6_000 and most == PARTS_AT_ONCE
