"""The few calls mmindex makes into the C library, in one place: memory given back to the system (Arrow's allocator's
with it), and C stdio flushed, where Python has no call of its own."""

from __future__ import annotations

import ctypes

import pyarrow

MADV_DONTNEED = 4   # madvise(2): the process no longer needs these pages of a mapping
_LIBC = ctypes.CDLL(None)


def drop_pages(address: int, size: int) -> None:
    """Lets go of a mapping's pages: a file's stay in the kernel's cache, but no longer count in this process."""
    _LIBC.madvise(ctypes.c_void_p(address), ctypes.c_size_t(size), MADV_DONTNEED)


def give_back_freed_memory() -> None:
    """Hands memory that was freed back to the system: glibc keeps what a thread freed for its next allocations,
    and after filling parts on two threads an index build held 1.3 GB that nothing used while it merged and tuned.
    Arrow's own allocator (mimalloc) keeps what it freed too: about 60 MB after reading a 1M-row shard's keys."""
    pyarrow.default_memory_pool().release_unused()
    trim = getattr(_LIBC, "malloc_trim", None)  # glibc's; other C libraries give memory back as they do
    if trim is not None:
        trim(0)


def flush_c_stdio() -> None:
    """Writes out what native code (FAISS) buffered in C's stdio, which Python's own flush does not reach."""
    _LIBC.fflush(None)
