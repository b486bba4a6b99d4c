"""Learning a bridge space's mapping: once per space and dataset, by the first embed run, before any vector.

The mapping is learned from the training texts embedded by both spaces' text encoders, written next to the
embeddings (mmindex.dataset.embeddings binds later runs to it), and its digest becomes part of the space.
"""

from __future__ import annotations

import logging
from dataclasses import asdict

import numpy as np

from mmindex.bridge import mapping as mappings
from mmindex.bridge.learn import HELD_OUT, LearnSettings, held_out, learn
from mmindex.bridge.texts import MAX_TEXTS, texts_digest, training_texts
from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.dataset.samples import captions
from mmindex.encoders.base import Encoder
from mmindex.sizes import counted
from mmindex.spaces import Space

log = logging.getLogger("mmindex")


def learn_bridge(store: EmbeddingStore) -> Space:
    """Learns the mapping, writes it next to the embeddings and returns the space bound to it."""
    space = store.space
    settings = LearnSettings(**space.settings.get("learn", {}))
    texts = training_texts(space.settings["texts"], space.settings.get("max_texts", MAX_TEXTS),
                           lambda: [text for key, text in captions(store.dataset).items() if not held_out(key)],
                           settings.seed)
    if len(texts) < 2:
        raise ValueError(f"space {space.name!r}: its texts ({', '.join(space.settings['texts'])}) give "
                         f"{counted(len(texts), 'training text')}; a bridge needs many (add wordnet to texts)")
    base, bridged = space.joined()
    log.info("embed: learning the %s -> %s bridge from %d texts", bridged.name, base.name, len(texts))
    target = _embed_texts(base.load("cpu", {"text"})["text"], texts)
    source = _embed_texts(bridged.load("cpu", {"text"})["text"], texts)
    digest = mappings.save(learn(source, target, settings), store.mapping_path)
    record = {"digest": digest, "texts": len(texts), "texts_digest": texts_digest(texts), "held_out": HELD_OUT,
              "learned": asdict(settings)}
    return Space(space.name, {**space.settings, "mapping": record}, mapping=store.mapping_path)


def _embed_texts(encoder: Encoder, texts: list[str], batch: int = 128) -> np.ndarray:
    return np.concatenate([np.asarray(encoder.encode(texts[i:i + batch]).vectors, np.float32)
                           for i in range(0, len(texts), batch)])
