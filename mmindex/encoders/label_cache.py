"""The text vectors of ConSE's 1,000 label texts, cached on disk: computing them costs seconds of a text
model's time, which an image query should not pay each time.

A cache file is keyed by the text model's files (names, sizes, modification times) and by the label texts
themselves, so a new model or any change to the label settings makes a new file rather than reusing an old
one. Files are written to a temporary name and renamed; an unreadable or mis-shaped file is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmindex import storage

CACHE_ENV = "MMINDEX_CACHE"


def cache_dir() -> Path:
    """$MMINDEX_CACHE, else $XDG_CACHE_HOME/mmindex, else ~/.cache/mmindex."""
    if folder := os.environ.get(CACHE_ENV):
        return Path(folder)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mmindex"


def cache_key(model_folder: Path, groups: list[list[str]]) -> str:
    """Digest of the text model's files and of the label texts (each label a group of texts averaged)."""
    files = sorted((str(p.relative_to(model_folder)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in Path(model_folder).rglob("*") if p.is_file())
    blob = json.dumps({"format": 1, "model": files, "labels": groups}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def label_vectors(model_folder: Path, groups: list[list[str]], embed: Callable[[list[str]], np.ndarray]
                  ) -> np.ndarray:
    """One unit vector per group (the normalised mean of its texts' vectors), from the cache when it holds
    them; ``embed`` (texts -> unit vectors) runs only on a miss."""
    path = cache_dir() / f"conse-labels-{cache_key(model_folder, groups)}.npy"
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.ndim == 2 and len(cached) == len(groups) and cached.dtype == np.float32:
            return cached
    except (OSError, ValueError):
        pass  # missing or damaged: recompute below
    flat = [text for group in groups for text in group]
    vectors = embed(flat)
    ends = np.cumsum([len(group) for group in groups])
    means = np.stack([part.mean(axis=0) for part in np.split(vectors, ends[:-1])])
    means = (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)
    try:
        buffer = io.BytesIO()
        np.save(buffer, means)
        storage.write_atomic(str(path), buffer.getvalue())
    except OSError:
        pass  # a read-only home still works, only slower
    return means
