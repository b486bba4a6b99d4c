"""Index generations: every build writes a complete new folder, and one atomic rename publishes it.

    indexes/<space>/<modality>/CURRENT    the name of the published generation (written whole, then renamed)
    indexes/<space>/<modality>/gNNNNNN/   one build: index.faiss, keys.parquet, info.json, checksums.json, .readers

A reader resolves CURRENT once and reads every file of one build from that folder, so an index and the
settings it was tuned with never come from two builds. Readers hold a shared lock on the generation's
.readers file while they open its files; a builder removes an old generation only when it can take that lock
exclusively, so no reader loses a file it is about to open (a memory-mapped index stays readable after its
file is removed). Object stores have no such lock: there the previous generation is kept, older ones go.
An index written before generations (its files directly in the modality's folder) is read where it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import posixpath
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

from mmindex import storage

CURRENT = "CURRENT"
READERS = ".readers"
INFO = "info.json"   # written last: a generation is complete once it exists
LEGACY = ("index.faiss", "keys.parquet", INFO)
_NAME = re.compile(r"g(\d{6})")


@dataclass(frozen=True)
class Generation:
    folder: str

    def path(self, name: str) -> str:
        return storage.join(self.folder, name)


def published(root: str) -> Generation | None:
    """The generation readers use now, or None when no index has been built."""
    pointer = storage.join(root, CURRENT)
    if storage.exists(pointer):
        return Generation(storage.join(root, storage.read_bytes(pointer).decode().strip()))
    return Generation(root) if storage.exists(storage.join(root, INFO)) else None


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
    storage.write_atomic(storage.join(root, CURRENT), posixpath.basename(generation.folder.rstrip("/")).encode())
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
