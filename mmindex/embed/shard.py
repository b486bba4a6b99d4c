"""Reading one shard's items and embedding them: the unit of work of both the worker pool and Beam."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mmindex import storage
from mmindex.dataset.embeddings import ShardEmbeddings
from mmindex.dataset.members import shard_members
from mmindex.encoders.base import Encoded, Encoder, Preparer
from mmindex.media import Rejected
from mmindex.modalities import MODALITIES, modality_of

log = logging.getLogger("mmindex")


@dataclass(frozen=True)
class Item:
    """One member of a shard that a space may embed: where its bytes are, and which modality it is."""

    key: str
    modality: str
    offset: int
    size: int


def shard_items(path: str) -> list[Item]:
    """Image, audio and text members of a shard tar, in tar order."""
    return [Item(member.key, modality, member.offset, member.size) for member in shard_members(path)
            if (modality := modality_of(member.ext)) in MODALITIES]


@dataclass(frozen=True)
class Chunk:
    """Items of one modality from one shard, embedded as one batch."""

    path: str
    modality: str
    items: list[Item]


def prepare_chunk(chunk: Chunk, preparers: dict[str, Preparer]) -> list[Any]:
    """Each item's model input, or the Rejected that says why it has none (runs in decode processes)."""
    prepare = preparers[chunk.modality]
    prepared: list[Any] = []
    for item in chunk.items:
        try:
            prepared.append(prepare(storage.read_bytes(chunk.path, item.offset, item.size)))
        except Rejected as rejected:
            prepared.append(rejected)
    return prepared


def chunks(path: str, items: list[Item], modalities: Iterable[str], batch_size: int) -> list[Chunk]:
    """Batches in a fixed order (modality, then position in the tar), so results do not depend on workers."""
    out = []
    for modality in sorted(modalities):
        group = [item for item in items if item.modality == modality]
        out += [Chunk(path, modality, group[i:i + batch_size]) for i in range(0, len(group), batch_size)]
    return out


def encode_robustly(encoder: Encoder, inputs: list[Any]) -> Encoded:
    """A batch's vectors; if the model fails on the batch, item by item, so one bad item costs only itself."""
    try:
        return encoder.encode(inputs)
    except (RuntimeError, ValueError, IndexError) as err:
        if len(inputs) == 1:
            raise
        log.warning("embed: %s batch of %d failed (%s); retrying item by item", encoder.modality, len(inputs), err)
    vectors, skipped, notes = [], [], []
    for one in inputs:
        try:
            result = encoder.encode([one])
            vectors.append(result.vectors[0])
            skipped.append(result.skipped[0])
            notes.append(result.notes[0])
        except (RuntimeError, ValueError, IndexError) as err:
            vectors.append(None)
            skipped.append(f"encoder failed: {err}")
            notes.append(None)
    return Encoded(vectors, skipped, notes)  # type: ignore[arg-type]


def collect(result: ShardEmbeddings, chunk: Chunk, prepared: list[Any], encoder: Encoder) -> None:
    """Adds a chunk's items to the shard's result: a vector each, or the reason it has none."""
    good = [i for i, x in enumerate(prepared) if not isinstance(x, Rejected)]
    encoded = encode_robustly(encoder, [prepared[i] for i in good]) if good else None
    position = {i: j for j, i in enumerate(good)}
    for i, item in enumerate(chunk.items):
        if i not in position:
            rejected = prepared[i]
            result.add(item.key, chunk.modality, None, f"{rejected.reason}: {rejected.detail}")
            continue
        j = position[i]
        skipped = encoded.skipped[j]
        result.add(item.key, chunk.modality, None if skipped else encoded.vectors[j], skipped, encoded.notes[j])


@dataclass
class Times:
    """Per modality, a worker's seconds on a shard, and of them the seconds it waited for input: its decode
    processes' next batch (or, without them, reading and decoding it itself). A model that waits most of the
    time is fed too slowly (see console.print_embed)."""

    spent: Counter = field(default_factory=Counter)
    waited: Counter = field(default_factory=Counter)


Decoded = Callable[[list[Chunk]], Iterator[contextlib.AbstractContextManager[list[Any]]]]


def decoded_here(preparers: dict[str, Preparer]) -> Decoded:
    """Each chunk's batch prepared in this process, as the worker asks for it."""
    return lambda jobs: (contextlib.nullcontext(prepare_chunk(chunk, preparers)) for chunk in jobs)


def embed_shard(number: int, path: str, encoders: dict[str, Encoder], decoded: Decoded,
                batch_size: int) -> tuple[ShardEmbeddings, Times]:
    """All of a shard's items in the space, and the time it took. ``decoded`` gives each chunk's prepared batch, in
    order, as a context in which it may be read (here, or from decode processes: steps.DecodePool)."""
    result, times = ShardEmbeddings(number), Times()
    jobs = chunks(path, shard_items(path), encoders, batch_size)
    with contextlib.closing(decoded(jobs)) as batches:
        started = time.perf_counter()
        for chunk in jobs:
            batch = next(batches)
            arrived = time.perf_counter()
            with batch as prepared:
                collect(result, chunk, prepared, encoders[chunk.modality])
            now = time.perf_counter()
            times.spent[chunk.modality] += now - started
            times.waited[chunk.modality] += arrived - started
            started = now
    return result, times
