"""One writer at a time: the lock a stage holds on a local dataset while it writes."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

from mmindex import storage
from mmindex.dataset.layout import Dataset


class DatasetBusy(RuntimeError):
    """Another run is writing to the dataset."""


@contextlib.contextmanager
def exclusive(dataset: Dataset, stage: str) -> Iterator[None]:
    """Refuses a second run writing to the same local dataset; a lock whose process died is taken over.

    (Object stores have no such lock: run one writer per dataset there.)
    """
    if not storage.is_local(dataset.root):
        yield
        return
    os.makedirs(dataset.root, exist_ok=True)
    path = dataset.lock_path
    mine = json.dumps({"stage": stage, "pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            holder = _read_lock(path)
            if holder.get("host") == socket.gethostname() and not _alive(holder.get("pid", -1)):
                os.unlink(path)
                continue
            raise DatasetBusy(f"{dataset.root} is being written by another run ({holder.get('stage')}, "
                              f"pid {holder.get('pid')} on {holder.get('host')}); if none is running, "
                              f"delete {path}") from None
    else:
        raise DatasetBusy(f"could not lock {dataset.root}")
    try:  # a lock that cannot be written (a full disk) is removed, or it would turn the next run away
        with storage.naming(path), os.fdopen(fd, "w") as f:
            f.write(mine)
        yield
    finally:
        os.unlink(path)


def _read_lock(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True
