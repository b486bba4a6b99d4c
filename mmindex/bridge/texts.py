"""The texts a bridge learns from: each is embedded by both spaces' text encoders, and the pair of vectors is
one training example. Sources: ``captions`` (the dataset's own captions, training split only), ``wordnet``
(English WordNet lemmas and glosses shipped with mmindex), or a UTF-8 file with one text per line."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
from collections.abc import Callable
from pathlib import Path

import numpy as np

WORDNET = "wordnet_texts.txt.gz"
MAX_TEXTS = 5000   # a bridge space's default max_texts


def wordnet() -> list[str]:
    """A fixed sample of WordNet 3.0 lemmas and glosses (see ATTRIBUTION.md beside this module)."""
    data = importlib.resources.files("mmindex.bridge").joinpath(WORDNET).read_bytes()
    return gzip.decompress(data).decode("utf-8").splitlines()


def from_file(path: str) -> list[str]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"bridge texts {path!r}: no such file (give captions, wordnet, or a UTF-8 text "
                                f"file with one text per line)")
    try:
        return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError(f"bridge texts {path}: not UTF-8 text") from None


def training_texts(sources: list[str], limit: int, captions: Callable[[], list[str]], seed: int = 0) -> list[str]:
    """The distinct texts of all ``sources``, sorted; a fixed random ``limit`` of them where there are more.
    ``captions`` gives the dataset's training captions, read only where a source asks for them."""
    texts: set[str] = set()
    for source in sources:
        texts.update(captions() if source == "captions" else wordnet() if source == "wordnet" else from_file(source))
    ordered = sorted(texts)
    if len(ordered) > limit:
        keep = np.random.default_rng(seed).choice(len(ordered), size=limit, replace=False)
        ordered = [ordered[i] for i in sorted(keep)]
    return ordered


def texts_digest(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
