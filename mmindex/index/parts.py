"""An index in parts: trained once, filled one part per shard on any worker, merged into one set of lists.

    Train     the empty index, trained on a sample of at most --max-memory / 4 of float32 vectors drawn across
              the shards (or, for an --update, the published index with its lists emptied)
    AddShard  a copy of it holding one shard's vectors, under their final ids
    merge     every part's inverted lists (and the published generation's, for an --update) into one set: on disk
              beside the index where the dataset is local (FAISS's OnDiskInvertedLists layout, written a range
              of lists per pass, and memory-mapped when searched), else in memory

The trained index and the parts sit in the dataset's scratch area under a name that the plan decides, so a rerun
after a crash reuses what was made, and the same plan gives the same bytes on any executor: training samples
with a fixed seed, a part depends on its shard alone, both run on one thread (below), and lists are merged in
id order.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from mmindex import storage
from mmindex.dataset.indexes import INDEX, LISTS, Generation
from mmindex.index.choose import PARTS_AT_ONCE
from mmindex.index.plan import IndexPlan, ShardSpan, lists_on_disk, scratch_prefix
from mmindex.index.store import native_stdout_to_stderr, read_index
from mmindex.index.vectors import sample_rows
from mmindex.native import give_back_freed_memory
from mmindex.stages import Compact

log = logging.getLogger("mmindex")
ADD_BATCH = 16_384   # vectors a part adds at a time (FAISS holds a few float32 copies of a batch)
# Training and assigning vectors to lists search the centroids through BLAS, whose choice between nearly equal
# scores (float16 vectors have many) changes with its thread count: a Dask worker starts with one thread, this
# machine with one a core. Both steps run on one thread wherever they run (a count can only be lowered: OpenBLAS
# sizes its buffers for the threads it started with), so that every executor makes the same bytes; an executor
# runs parts at once on threads of its own instead.
THREADS = 1
# The chooser sizes a part's codes for PARTS_AT_ONCE parts held by one process: however many threads an executor
# gives the step (the in-process one has up to 4, a Dask worker its own), no more parts are filled at once.
_filling = threading.BoundedSemaphore(PARTS_AT_ONCE)


@dataclass(frozen=True)
class Trained(Compact):
    plan: IndexPlan
    path: str   # the trained, empty index


@dataclass(frozen=True)
class Part(Compact):
    plan: IndexPlan
    shard: ShardSpan


@dataclass(frozen=True)
class PartAdded(Compact):
    root: str        # the index it belongs to
    shard: ShardSpan
    path: str


def train(plan: IndexPlan) -> Iterator[Trained | Part]:
    """The plan's trained index (made once), then one Part per shard to add when the index is built from parts.
    A whole index's --update starts from the published index itself."""
    path = f"{plan.work}-trained.faiss"
    if plan.previous and not plan.parts:
        path = storage.join(plan.previous, INDEX)
    elif not storage.exists(path):
        with threadpool_limits(THREADS):
            index = _emptied(plan) if plan.previous else _trained(plan)
        write_index(index, path)
    yield Trained(plan, path)
    if plan.parts:
        yield from (Part(plan, span) for span in plan.added)


def add_part(part: Part) -> Iterator[PartAdded]:
    """The trained index holding one shard's vectors, as ids ``first`` on (made once)."""
    plan, span = part.plan, part.shard
    path = f"{plan.work}-{span.name}.faiss"
    if not storage.exists(path):
        with _filling:
            index = read_index(f"{plan.work}-trained.faiss")
            with threadpool_limits(THREADS):
                add(index, plan.shard_vectors(span).vectors, span.first)
            write_index(index, path)
            del index
            give_back_freed_memory()
        log.info("index: %s part of shard %s made (%s vectors)", plan.files.modality, span.name, f"{span.vectors:,}")
    yield PartAdded(plan.files.root, span, path)


def add(index: faiss.Index, vectors: np.ndarray, first: int) -> None:
    """``vectors`` added in batches (float32 only a batch at a time), as ids ``first`` on where the index takes
    ids (IVF: into an empty one's lists at exactly their size, unless a transform comes first), else in order."""
    top, ivf = faiss.downcast_index(index), _ivf(index)
    if isinstance(top, faiss.IndexIVF) and top.ntotal == 0:
        add_sized(top, vectors, first)
        return
    for start in range(0, len(vectors), ADD_BATCH):
        batch = _batch(vectors, start)
        if ivf is None:
            index.add(batch)
        else:
            index.add_with_ids(batch, np.arange(first + start, first + start + len(batch), dtype=np.int64))


def add_sized(ivf: faiss.IndexIVF, vectors: np.ndarray, first: int) -> None:
    """What FAISS's add_with_ids makes of an empty IVF index, byte for byte, but with each list allocated once at
    its size: FAISS appends, and a list that grows doubles, so a part held up to twice its codes (two 1M-vector
    SQ8 parts took 1.4 GB, not 0.8). A first pass assigns every vector its list (8 bytes a vector), the second
    encodes and places each batch."""
    lists = np.concatenate([ivf.quantizer.assign(_batch(vectors, start), 1).ravel()
                            for start in range(0, len(vectors), ADD_BATCH)] or [np.zeros(0, np.int64)])
    sizes = np.bincount(lists[lists >= 0], minlength=ivf.nlist)
    invlists = ivf.invlists
    for number in np.flatnonzero(sizes):
        invlists.resize(int(number), int(sizes[number]))
    filled = np.zeros(ivf.nlist, np.int64)
    for start in range(0, len(vectors), ADD_BATCH):
        batch, assigned = _batch(vectors, start), np.ascontiguousarray(lists[start:start + ADD_BATCH])
        codes = np.empty((len(batch), ivf.code_size), np.uint8)
        ivf.encode_vectors(len(batch), faiss.swig_ptr(batch), faiss.swig_ptr(assigned), faiss.swig_ptr(codes))
        ids = np.arange(first + start, first + start + len(batch), dtype=np.int64)
        order = np.argsort(assigned, kind="stable")  # within a list, in id order, as FAISS appends them
        bounds = np.searchsorted(assigned[order], np.arange(ivf.nlist + 1))
        for number in np.flatnonzero(np.diff(bounds)):
            rows = order[bounds[number]:bounds[number + 1]]
            ids_of, codes_of = np.ascontiguousarray(ids[rows]), np.ascontiguousarray(codes[rows])
            invlists.update_entries(int(number), int(filled[number]), len(rows), faiss.swig_ptr(ids_of),
                                    faiss.swig_ptr(codes_of))
            filled[number] += len(rows)
    ivf.ntotal = int(filled.sum())


def _batch(vectors: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(vectors[start:start + ADD_BATCH], dtype=np.float32)


def merge(plan: IndexPlan, trained: Trained, parts: list[PartAdded], generation: Generation) -> faiss.Index:
    """The trained index with the lists of the parts (in id order) and, for an --update, the published index's."""
    index = read_index(trained.path)
    sources = [p.path for p in sorted(parts, key=lambda p: p.shard.first)]
    if plan.previous:
        sources.insert(0, storage.join(plan.previous, INDEX))
    ivf = faiss.extract_index_ivf(index)
    if lists_on_disk(generation.folder):
        lists = merged_on_disk(ivf, sources, generation.path(LISTS), plan.settings.max_memory // 4)
        ivf.replace_invlists(lists, True)
        lists.this.disown()
        index.ntotal = ivf.ntotal = lists.compute_ntotal()
    else:
        for source in sources:
            index.merge_from(read_index(source), 0)
    log.info("index: %s lists merged from %d parts (%s vectors)", plan.files.modality, len(sources),
             f"{index.ntotal:,}")
    return index


def merged_on_disk(ivf: faiss.IndexIVF, sources: list[str], path: str, pass_bytes: int) -> faiss.InvertedLists:
    """The sources' lists, in order, in one file laid out as FAISS's OnDiskInvertedLists lays out a merge (each
    list's codes, then its ids). Written with plain writes, a range of lists per pass over the (memory-mapped)
    sources, which are closed between passes: the pages this process touches, and so its memory, stay within
    ``pass_bytes``, however many vectors there are."""
    sizes = np.zeros(ivf.nlist, np.uint64)
    for source in sources:
        lists = faiss.extract_index_ivf(source_index := read_index(source, mmap=True)).invlists
        sizes += np.array([lists.list_size(j) for j in range(ivf.nlist)], np.uint64)
        del source_index
    entry = ivf.code_size + 8
    offsets = np.concatenate([[0], np.cumsum(sizes * entry)]).astype(np.int64)
    merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, path)
    merged.set_all_lists_sizes(faiss.swig_ptr(sizes))
    if offsets[-1]:
        with native_stdout_to_stderr():  # FAISS prints the file's size on stdout, where the command's report goes
            merged.update_totsize(int(offsets[-1]))
    merged.filename = LISTS  # recorded in the index as a bare name: it is read beside the index, wherever that is
    with open(path, "r+b") as out:
        first = 0
        while first < ivf.nlist:
            last = int(np.searchsorted(offsets, offsets[first] + max(pass_bytes, 1), side="right")) - 1
            last = max(last, first + 1)
            _copy_lists(sources, range(first, min(last, ivf.nlist)), sizes, offsets, ivf.code_size, out.fileno())
            first = last
    return merged


def _copy_lists(sources: list[str], numbers: range, sizes: np.ndarray, offsets: np.ndarray, code_size: int,
                out: int) -> None:
    filled = np.zeros(len(numbers), np.int64)
    for source in sources:
        index = read_index(source, mmap=True)
        lists = faiss.extract_index_ivf(index).invlists
        for k, j in enumerate(numbers):
            n = lists.list_size(j)
            if not n:
                continue
            codes = faiss.rev_swig_ptr(lists.get_codes(j), n * code_size).tobytes()
            ids = faiss.rev_swig_ptr(lists.get_ids(j), n).tobytes()
            os.pwrite(out, codes, int(offsets[j]) + int(filled[k]) * code_size)
            os.pwrite(out, ids, int(offsets[j]) + int(sizes[j]) * code_size + int(filled[k]) * 8)
            filled[k] += n
        del lists, index  # unmapped: its pages leave this process


def remove_work(plan: IndexPlan) -> None:
    """Deletes the scratch files of every build of this index: this plan's, and those of builds that died (their
    half-written temporaries too)."""
    scratch = plan.files.embeddings.dataset.scratch_path
    prefix = scratch_prefix(plan.files)
    storage.delete(storage.glob(scratch(f"{prefix}*")) + storage.glob(scratch(f"{storage.TEMP_MARK}{prefix}*")))


def _trained(plan: IndexPlan) -> faiss.Index:
    index = faiss.index_factory(plan.dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        shards = [plan.shard_vectors(span) for span in plan.shards]
        sample = sample_rows(shards, plan.sample, seed=0)
        log.info("index: training %s on %s vectors", plan.factory, f"{len(sample):,}")
        index.train(sample)
    return index


def _emptied(plan: IndexPlan) -> faiss.Index:
    """The published index with no vectors: trained as it was, so that new parts fit its lists."""
    index = read_index(storage.join(plan.previous, INDEX))
    ivf = faiss.extract_index_ivf(index)
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)
    empty.this.disown()  # the index owns it now
    index.ntotal = ivf.ntotal = 0
    return index


def _ivf(index: faiss.Index) -> faiss.IndexIVF | None:
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def write_index(index: faiss.Index, path: str) -> None:
    """An index written whole or not at all, through our writer (local files and object stores alike)."""
    with storage.atomic_writer(path) as out:
        faiss.write_index(index, faiss.PyCallbackIOWriter(out.write))
