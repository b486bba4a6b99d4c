"""Fault points, for the fault-injection tests (tests/test_faults.py).

Every file operation a process makes inside one folder is a numbered point: creating a file, its first and
second write, closing it (when it was written to), a rename, a delete, a new folder. At a chosen point the
operation is replaced by a crash (SIGKILL, as a killed process or a machine that loses power) or by the error
a full or failing disk gives (ENOSPC, EIO), raised where the operating system raises it: a write's error
carries no file name, an open's does.

In a test's own process: ``with inject(Points(root, ...)):`` (to count the points, or for a disk error). A
crash needs a process of its own: ``python -m faultpoints ARGS`` runs ``mmindex ARGS`` with the points that
FAULT_ROOT, FAULT_AT and FAULT_ACTION give, and appends every point it passes to the file FAULT_LOG.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

KINDS = ("create", "write", "close", "rename", "delete", "mkdir")
DISK_FULL = ("create", "write", "close", "mkdir")   # where a full disk shows itself
ERRORS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}


@dataclass
class Points:
    root: str
    at: int = 0                           # the point that faults (counted over ``kinds``); 0: none, only count
    action: str = "kill"                  # kill, ENOSPC or EIO
    kinds: tuple[str, ...] = KINDS        # the operations that count as points
    log: str | None = None                # a file that gets one line per point passed
    seen: list[tuple[str, str]] = field(default_factory=list)   # (kind, path relative to root)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.root = os.path.realpath(self.root)
        if self.action != "kill" and self.action not in ERRORS:
            raise ValueError(f"unknown fault {self.action!r}")

    def hit(self, kind: str, path: Any) -> None:
        """Counts an operation on ``path``; at the chosen point, crashes or raises instead."""
        if kind not in self.kinds or not isinstance(path, str | bytes | os.PathLike):
            return
        full = os.path.realpath(os.fsdecode(path))
        if not full.startswith(self.root + os.sep):
            return
        with self._lock:
            self.seen.append((kind, os.path.relpath(full, self.root)))
            number = len(self.seen)
            if self.log:
                with _original["open"](self.log, "a") as log:
                    log.write(f"{number} {kind} {self.seen[-1][1]}\n")
        if number != self.at:
            return
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        code = ERRORS[self.action]
        if kind in ("write", "close"):
            raise OSError(code, os.strerror(code))
        raise OSError(code, os.strerror(code), os.fsdecode(path))


class _Watched:
    """A file opened for writing inside the root: its first two writes and its close are points."""

    def __init__(self, raw: Any, path: Any, points: Points):
        self._raw, self._path, self._points, self._writes = raw, path, points, 0

    def write(self, data: Any) -> int:
        self._writes += 1
        if self._writes <= 2:
            self._points.hit("write", self._path)
        return self._raw.write(data)

    def close(self) -> None:
        if self._raw.closed:
            return
        try:
            if self._writes:  # closing flushes what was written (an empty file has nothing to flush)
                self._points.hit("close", self._path)
        finally:  # as a real close: the file is closed even when flushing it failed
            self._raw.close()

    def __enter__(self) -> _Watched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


_original: dict[str, Any] = {"open": builtins.open}


def _patched(points: Points) -> dict[tuple[Any, str], Any]:
    """Replacements for the file operations the stages use (Beam's local file system uses the same)."""
    o = {name: getattr(os, name) for name in ("open", "replace", "rename", "remove", "unlink", "mkdir")}
    builtin_open, rmtree = builtins.open, shutil.rmtree

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        writing = any(c in mode for c in "wax+")
        if writing:
            points.hit("create", file)
        raw = builtin_open(file, mode, *args, **kwargs)
        return _Watched(raw, file, points) if writing and isinstance(file, str | bytes | os.PathLike) else raw

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and "dir_fd" not in kwargs and not os.path.exists(path):
            points.hit("create", path)
        return o["open"](path, flags, *args, **kwargs)

    def renamer(name: str) -> Any:
        def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if not kwargs:
                points.hit("rename", dst)
            return o[name](src, dst, *args, **kwargs)
        return rename

    def deleter(original: Any) -> Any:
        def delete(path: Any, *args: Any, **kwargs: Any) -> None:
            if "dir_fd" not in kwargs:  # rmtree's own steps are not points: the rmtree is
                points.hit("delete", path)
            return original(path, *args, **kwargs)
        return delete

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if "dir_fd" not in kwargs and not os.path.exists(path):
            points.hit("mkdir", path)
        return o["mkdir"](path, *args, **kwargs)

    return {(builtins, "open"): open_, (os, "open"): os_open, (os, "replace"): renamer("replace"),
            (os, "rename"): renamer("rename"), (os, "remove"): deleter(o["remove"]),
            (os, "unlink"): deleter(o["unlink"]), (shutil, "rmtree"): deleter(rmtree), (os, "mkdir"): mkdir}


@contextlib.contextmanager
def inject(points: Points) -> Iterator[Points]:
    """The file operations of this process go through ``points`` inside the block."""
    replacements = _patched(points)
    saved = {target: getattr(*target) for target in replacements}
    for (module, name), function in replacements.items():
        setattr(module, name, function)
    try:
        yield points
    finally:
        for (module, name), function in saved.items():
            setattr(module, name, function)


def main() -> None:
    """``mmindex ARGS`` with the points the environment sets (see the module's docstring)."""
    points = Points(os.environ["FAULT_ROOT"], int(os.environ.get("FAULT_AT", "0")),
                    os.environ.get("FAULT_ACTION", "kill"), log=os.environ.get("FAULT_LOG"))
    for (module, name), function in _patched(points).items():
        setattr(module, name, function)
    from mmindex.cli import main as mmindex

    sys.argv[0] = "mmindex"
    mmindex()


if __name__ == "__main__":
    main()
