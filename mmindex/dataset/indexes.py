"""indexes/<space>/<modality>/: generations of an index; every build writes a complete new folder, and one atomic
rename publishes it.

    indexes/<space>/<modality>/CURRENT    the name of the published generation (written whole, then renamed)
    indexes/<space>/<modality>/gNNNNNN/   one build:
        index.faiss     the FAISS index; id i is row i of keys.arrow
        lists.ivfdata   an IVF index's inverted lists (codes and ids), on disk beside it: memory-mapped when read,
                        so a search process's memory does not grow with the vectors (local datasets; elsewhere,
                        and for other index types, the lists are inside index.faiss)
        keys.arrow      id -> key, shard: an Arrow IPC file, memory-mapped when read, so a search process holds no
                        keys but the pages it touches (builds before it wrote keys.parquet, still read)
        info.json       type, search parameters, measured recall, build time, bytes, vectors per shard (written last)
        checksums.json  size and sha256 of the others (checksums.py)
        .readers        the lock readers hold (below)

A reader resolves CURRENT once and reads every file of one build from that folder, so an index and the
settings it was tuned with never come from two builds. Readers hold a shared lock on the generation's
.readers file while they open its files; a builder removes an old generation only when it can take that lock
exclusively, so no reader loses a file it is about to open (a memory-mapped index stays readable after its
file is removed). Object stores have no such lock: there the previous generation is kept, older ones go.
An index written before generations (its files directly in the modality's folder) is read where it is.
CURRENT must name a generation of its own folder (``g`` and six digits, a real folder, not a link): anything
else is reported as damaged (PointerDamaged), never followed; ``repair_pointer`` points it at the newest complete
generation again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import posixpath
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, overload

import pyarrow as pa

from mmindex import storage
from mmindex.dataset.checksums import Recorder
from mmindex.dataset.parquet import read_parquet

CURRENT = "CURRENT"
READERS = ".readers"
INDEX = "index.faiss"
LISTS = "lists.ivfdata"
KEYS = "keys.arrow"
KEYS_BEFORE = "keys.parquet"  # what builds wrote before keys.arrow
INFO = "info.json"   # written last: a generation is complete once it exists
RECORD = "checksums.json"
LEGACY = (INDEX, KEYS_BEFORE, INFO)
KEYS_SCHEMA = pa.schema([pa.field("key", pa.string(), nullable=False), pa.field("shard", pa.string(), nullable=False)])
_NAME = re.compile(r"g(\d{6})")


class PointerDamaged(ValueError):
    """A CURRENT file that does not name a generation of its own folder; the message says what to run."""

    def __init__(self, pointer: str, problem: str):
        dataset = posixpath.dirname(posixpath.dirname(posixpath.dirname(posixpath.dirname(pointer))))
        super().__init__(f"{pointer} is damaged ({problem}): run `mmindex check {dataset} --repair`")
        self.problem = problem


@dataclass(frozen=True)
class Generation:
    folder: str

    def path(self, name: str) -> str:
        return storage.join(self.folder, name)

    def info(self) -> dict[str, Any]:
        return json.loads(storage.read_bytes(self.path(INFO)))

    def keys_file(self) -> str:
        """The generation's keys file: keys.arrow, or the keys.parquet of a build before it."""
        return self.path(KEYS_BEFORE if storage.exists(self.path(KEYS_BEFORE)) else KEYS)

    def keys(self) -> tuple[IdColumn, IdColumn]:
        """The key and the shard of each id: id i is the sample keys[i] of shard shards[i]. A local keys.arrow is
        memory-mapped (read whole elsewhere): 10 million keys took 340 MB of every search process's memory."""
        path = self.keys_file()
        if path.endswith(KEYS_BEFORE):
            table = read_parquet(path, ["key", "shard"])
        else:
            source = pa.memory_map(path) if storage.is_local(path) else pa.BufferReader(storage.read_bytes(path))
            table = pa.ipc.open_file(source).read_all()
        return IdColumn(table.column("key")), IdColumn(table.column("shard"))


class IdColumn(Sequence[str]):
    """A column of the keys file, one string per id, as Arrow holds it (in chunks, one per shard): where it is
    memory-mapped, an id's string is read when asked for; a list of Python strings took 70 bytes an id."""

    def __init__(self, column: pa.ChunkedArray):
        self.column = column

    def __len__(self) -> int:
        return len(self.column)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return self.column[index].to_pylist()
        return self.column[index].as_py()

    def __iter__(self) -> Iterator[str]:
        for chunk in self.column.iterchunks():
            for start in range(0, len(chunk), 65_536):
                yield from chunk[start:start + 65_536].to_pylist()


def published(root: str) -> Generation | None:
    """The generation readers use now, or None when no index has been built. PointerDamaged, naming the file,
    when CURRENT does not name a generation (``g`` and six digits) of ``root``."""
    pointer = pointer_path(root)
    if storage.exists(pointer):
        return Generation(storage.join(root, pointed(pointer)))
    return Generation(root) if storage.exists(storage.join(root, INFO)) else None


def pointer_path(root: str) -> str:
    """The CURRENT file of the index folder ``root``."""
    return storage.join(root, CURRENT)


def pointed(pointer: str) -> str:
    """The generation a CURRENT file names; PointerDamaged, saying what to run, when it is not one."""
    raw = storage.read_bytes(pointer)
    name = raw.decode("ascii", "replace").strip()
    problem = None if _NAME.fullmatch(name) else f"it holds {raw[:40]!r}, not a generation name such as g000001"
    if problem is None and _linked(storage.join(posixpath.dirname(pointer), name)):
        problem = f"it names {name}, a link (generations are folders of their own)"
    if problem:
        raise PointerDamaged(pointer, problem)
    return name


def repair_pointer(root: str) -> str | None:
    """Points a damaged CURRENT at the newest complete generation (info.json written) and returns its name; with
    none complete, removes CURRENT (the index is then built again) and returns None."""
    complete = [name for name in _names(root) if storage.exists(storage.join(root, name, INFO))
                and not _linked(storage.join(root, name))]
    if complete:
        storage.write_atomic(pointer_path(root), complete[-1].encode())
        return complete[-1]
    storage.delete([pointer_path(root)])
    return None


def _linked(folder: str) -> bool:
    """Whether a generation's name leads to a link: never followed, since it could lead out of the dataset."""
    return storage.is_local(folder) and os.path.islink(folder)


class GenerationWriter:
    """The files of a new generation, each recorded as it is written; ``commit`` writes info.json last."""

    def __init__(self, dataset_root: str, generation: Generation):
        self.generation = generation
        self.recorder = Recorder(dataset_root, generation.path(RECORD))
        self.bytes = 0

    def record(self, name: str) -> None:
        """Records a file that another writer (FAISS's on-disk lists) wrote into the generation."""
        self.bytes += self.recorder.record_file(self.generation.path(name))

    def write_index(self, write: Callable[[BinaryIO], None]) -> None:
        with self.recorder.writer(self.generation.path(INDEX)) as out:
            write(out)
        self.bytes += out.size

    def write_keys(self, tables: Iterable[pa.Table]) -> None:
        """The key and shard of every id, in id order, a table (a shard) at a time: never all keys in memory.
        Uncompressed, so that readers can map it."""
        with self.recorder.writer(self.generation.path(KEYS)) as out, \
                pa.ipc.new_file(pa.PythonFile(out, mode="w"), KEYS_SCHEMA) as keys:
            for table in tables:
                keys.write_table(table.cast(KEYS_SCHEMA))

    def commit(self, info: dict[str, Any]) -> None:
        info["bytes"] = self.bytes
        self.recorder.commit(self.generation.path(INFO), json.dumps(info, indent=2).encode())


@contextlib.contextmanager
def writing_generation(dataset_root: str, root: str) -> Iterator[GenerationWriter]:
    """A new generation to write, published when the block ends (once readers get it, this returns). One that
    cannot be written whole (a full disk, an error) is removed, and the published one stays; one whose builder
    was killed is never published, and the next build removes it."""
    writer = GenerationWriter(dataset_root, new_generation(root))
    try:
        yield writer
    except BaseException:
        discard(writer.generation)
        raise
    publish(root, writer.generation)


def _names(root: str) -> list[str]:
    """Generation folders under ``root``, complete or not, oldest first."""
    if storage.is_local(root):
        found = os.listdir(root) if os.path.isdir(root) else []
    else:
        found = {posixpath.basename(posixpath.dirname(p)) for p in storage.glob(storage.join(root, "g*", "*"))}
    return sorted(name for name in found if _NAME.fullmatch(name))


def new_generation(root: str) -> Generation:
    """An empty folder for the next build, numbered after every generation there is."""
    names = _names(root)
    generation = Generation(storage.join(root, f"g{int(names[-1][1:]) + 1 if names else 1:06d}"))
    if storage.is_local(root):
        os.makedirs(generation.folder)
        open(generation.path(READERS), "wb").close()
    return generation


def publish(root: str, generation: Generation) -> None:
    """Makes ``generation`` the one readers use, then removes what no reader can still need (and the temporary
    copies of CURRENT that a killed build left)."""
    storage.write_atomic(pointer_path(root), posixpath.basename(generation.folder.rstrip("/")).encode())
    storage.delete(storage.glob(storage.join(root, f"{storage.TEMP_MARK}*")))
    names = [n for n in _names(root) if storage.join(root, n) != generation.folder]
    if storage.is_local(root):
        for name in names:
            _remove_unread(storage.join(root, name))
        with contextlib.suppress(FileNotFoundError):
            for name in LEGACY:
                os.unlink(storage.join(root, name))
    else:
        storage.delete([p for name in names[:-1] for p in storage.glob(storage.join(root, name, "*"))])


def discard(generation: Generation) -> None:
    """Removes a generation that was never published (its build failed)."""
    if storage.is_local(generation.folder):
        shutil.rmtree(generation.folder, ignore_errors=True)
    else:
        storage.delete(storage.glob(storage.join(generation.folder, "*")))


def _remove_unread(folder: str) -> None:
    """Removes a generation's folder unless a reader holds it (then a later build removes it)."""
    try:
        lock = open(os.path.join(folder, READERS), "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        shutil.rmtree(folder, ignore_errors=True)  # a build that was killed before it wrote its lock
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def reading(generation: Generation) -> Iterator[None]:
    """Holds ``generation`` against removal while its files are opened. FileNotFoundError if it has been
    removed since CURRENT named it: the caller resolves CURRENT again."""
    before_generations = not os.path.exists(generation.path(READERS)) and os.path.exists(generation.path(INFO))
    if not storage.is_local(generation.folder) or before_generations:  # no lock to take
        yield
        return
    with open(generation.path(READERS), "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        if not os.path.exists(generation.path(INFO)):
            raise FileNotFoundError(2, "index generation removed while it was being opened", generation.folder)
        yield
