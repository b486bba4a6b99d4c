"""Bridge spaces: a base space kept as it is, and a bridged space whose other modalities are mapped into it.

    embeddings/<space>/bridge.npz    the learned mapping (bridged text space -> base space)
    embeddings/<space>/space.json    its digest, the digest of its training texts and their count

The mapping is learned once per space and dataset, by the first embed run, before any vector is written.
Later runs, searches and evals load that file and refuse it if it is not the one the vectors were made with.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from mmindex import storage
from mmindex.bridge import mapping as mappings
from mmindex.bridge.learn import LearnSettings, learn
from mmindex.bridge.texts import texts_digest, training_texts
from mmindex.encoders.base import Encoded, Encoder
from mmindex.spaces import Space, resolve_space

if TYPE_CHECKING:
    import torch

    from mmindex.embed.store import EmbeddingStore

log = logging.getLogger("mmindex")
MAPPING_FILE = "bridge.npz"
DEFAULT_LIMIT = 5000
HELD_OUT = "20% of sample keys (by hash), never learned from"


def check_settings(settings: dict[str, Any], origin: str) -> None:
    """Refuses a bridge YAML that cannot work, before anything loads."""
    for name in ("base", "bridged"):
        if not isinstance(settings.get(name), str):
            raise ValueError(f"{origin}: a bridge space needs '{name}' (a space: preset, YAML file or model)")
        if resolve_space(settings[name]).settings["kind"] == "bridge":
            raise ValueError(f"{origin}: '{name}' is itself a bridge space; bridge two plain spaces")
    texts = settings.get("texts")
    if not texts or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{origin}: a bridge space needs 'texts', a list of captions, wordnet or text files")
    limit = settings.get("max_texts", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 2:
        raise ValueError(f"{origin}: max_texts must be a whole number of at least 2, not {limit!r}")
    try:
        LearnSettings(**settings.get("learn", {}))
    except TypeError as err:
        raise ValueError(f"{origin}: learn: {err}") from None


class MappedEncoder(Encoder):
    """A bridged space's encoder whose vectors go through the mapping into the base space."""

    def __init__(self, inner: Encoder, mapping: mappings.Mapping):
        super().__init__(inner.device)
        self.inner, self.mapping = inner, mapping
        self.modality, self.dim = inner.modality, mapping.dims[1]

    def preparer(self):
        return self.inner.preparer()

    def encode(self, prepared: list[Any]) -> Encoded:
        encoded = self.inner.encode(prepared)
        vectors = np.zeros((len(prepared), self.dim), np.float32)
        kept = [i for i, reason in enumerate(encoded.skipped) if reason is None]
        if kept:
            vectors[kept] = self.mapping(np.asarray(encoded.vectors, np.float32)[kept])
        return Encoded(vectors, encoded.skipped, encoded.notes)


def bridge_encoders(space: Space, device: torch.device, only: set[str] | None) -> dict[str, Encoder]:
    """The base space's encoders, and the bridged space's other modalities through the mapping."""
    if space.mapping is None:
        raise RuntimeError(f"space {space.name!r} has no learned mapping yet: run `mmindex embed` with it first")
    base, bridged = space.joined()
    encoders = base.load(device, only)
    extra = {m for m in bridged.modalities() if m not in encoders and (only is None or m in only)}
    if extra:
        mapping, _ = mappings.load(space.mapping)
        for modality, encoder in bridged.load(device, extra).items():
            if modality in extra:
                encoders[modality] = MappedEncoder(encoder, mapping)
    return encoders


def bound(space: Space, root: str) -> Space:
    """The space with the mapping its vectors under ``root`` were made with; unchanged if none is learned yet.
    A mapping file that is missing or not the one recorded is refused (its vectors would not match)."""
    from mmindex.embed.store import SpaceMismatch

    record = storage.join(root, "space.json")
    if space.settings["kind"] != "bridge" or not storage.exists(record):
        return space
    recorded = json.loads(storage.read_bytes(record))["settings"].get("mapping", {})
    path = storage.join(root, MAPPING_FILE)
    if not storage.exists(path):
        raise SpaceMismatch(f"{path} is missing: the vectors in {root} were made with it. Restore it, or delete "
                            f"{root} to embed again with a new mapping")
    digest = mappings.digest(storage.read_bytes(path))  # the file is parsed where it is used (bridge_encoders)
    if digest != recorded.get("digest"):
        raise SpaceMismatch(f"{path} is not the mapping the vectors in {root} were made with (digest {digest}, "
                            f"recorded {recorded.get('digest')}); vectors of two mappings never mix. Restore it, "
                            f"or delete {root} to embed again")
    return Space(space.name, {**space.settings, "mapping": recorded}, mapping=path)


def learn_bridge(store: EmbeddingStore) -> Space:
    """Learns the mapping from the training texts embedded by both text encoders, writes it next to the
    embeddings and returns the space bound to it (its digest is then part of the fingerprint)."""
    space = store.space
    settings = LearnSettings(**space.settings.get("learn", {}))
    texts = training_texts(store.dataset, space.settings["texts"], space.settings.get("max_texts", DEFAULT_LIMIT),
                           settings.seed)
    if len(texts) < 2:
        raise ValueError(f"space {space.name!r}: its texts ({', '.join(space.settings['texts'])}) give "
                         f"{len(texts)} training text(s); a bridge needs many (add wordnet to texts)")
    base, bridged = space.joined()
    log.info("embed: learning the %s -> %s bridge from %d texts", bridged.name, base.name, len(texts))
    target = _embed_texts(base.load("cpu", {"text"})["text"], texts)
    source = _embed_texts(bridged.load("cpu", {"text"})["text"], texts)
    path = storage.join(store.root, MAPPING_FILE)
    digest = mappings.save(learn(source, target, settings), path)
    record = {"digest": digest, "texts": len(texts), "texts_digest": texts_digest(texts), "held_out": HELD_OUT,
              "learned": asdict(settings)}
    return Space(space.name, {**space.settings, "mapping": record}, mapping=path)


def _embed_texts(encoder: Encoder, texts: list[str], batch: int = 128) -> np.ndarray:
    return np.concatenate([np.asarray(encoder.encode(texts[i:i + batch]).vectors, np.float32)
                           for i in range(0, len(texts), batch)])
