"""Every kind of member a sample may hold, declared once: its file extensions, MIME types and ingest check.

A modality (image, audio, text) is what a space embeds and a query may carry; ``meta`` (a sample's .json) is a
member that is stored and served but never embedded. Ingest, embed, search and serve all read this table, so a
new modality is an entry here plus its encoder (see the README's architecture section).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mmindex.media import Limits, decode_text, inspect_audio, inspect_image, parse_metadata


def _inspect_text(data: bytes, limits: Limits) -> dict[str, Any]:
    text = decode_text(data, limits)
    return {"caption": text if text.strip() else None}


def _inspect_meta(data: bytes, limits: Limits) -> dict[str, Any]:
    parse_metadata(data, limits)
    return {}


@dataclass(frozen=True)
class Kind:
    """One kind of shard member."""

    name: str
    extensions: dict[str, str]     # accepted extension -> the one it is stored under in shards
    content_types: dict[str, str]  # stored extension -> MIME type (what the server sends)
    inspect: Callable[[bytes, Limits], dict[str, Any]]  # ingest's full check: the samples parquet fields it fills
    embedded: bool = True          # a space embeds it (a modality), and a sample must hold one such member
    media: bool = False            # binary media: a path in a manifest, a file or base64 in a query (text is a string)


KINDS = (
    Kind("image", {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp", "gif": "gif", "bmp": "bmp",
                   "tif": "tiff", "tiff": "tiff"},
         {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif", "bmp": "image/bmp",
          "tiff": "image/tiff"},
         inspect_image, media=True),
    Kind("audio", {"wav": "wav", "flac": "flac", "ogg": "ogg", "mp3": "mp3"},
         {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg", "mp3": "audio/mpeg"},
         inspect_audio, media=True),
    Kind("text", {"txt": "txt"}, {"txt": "text/plain; charset=utf-8"}, _inspect_text),
    Kind("meta", {"json": "json"}, {"json": "application/json"}, _inspect_meta, embedded=False),
)
BY_NAME = {kind.name: kind for kind in KINDS}
MODALITIES = tuple(kind.name for kind in KINDS if kind.embedded)   # what a space may embed, in this order
MEDIA = tuple(kind.name for kind in KINDS if kind.media)            # image and audio
PICKLE_EXTS = {"pkl", "pickle", "pyd", "pth", "pt", "ckpt", "joblib", "npy", "npz"}

_KIND_OF_EXT = {ext: kind for kind in KINDS for ext in kind.extensions}
CONTENT_TYPES = {ext: mime for kind in KINDS for ext, mime in kind.content_types.items()}


def modality_of(ext: str) -> str | None:
    """'image', 'audio', 'text', 'meta', or None for a file type mmindex does not take."""
    kind = _KIND_OF_EXT.get(ext.lower())
    return kind.name if kind else None


def canonical_ext(ext: str) -> str:
    """The extension a member gets inside a shard (``jpeg`` -> ``jpg``, ``tif`` -> ``tiff``)."""
    return _KIND_OF_EXT[ext.lower()].extensions[ext.lower()]


def stored_ext(ext: str, detected_format: str | None) -> str:
    """The extension a member gets inside a shard: that of the format its bytes are in, where it is one mmindex
    takes for the same modality (a WAV named .mp3 is stored as .wav), else the canonical form of its own."""
    detected = (detected_format or "").lower()
    same = _KIND_OF_EXT.get(detected)
    return same.extensions[detected] if same and same.name == modality_of(ext) else canonical_ext(ext)


def unsupported_reason(ext: str) -> tuple[str, str]:
    """Reason and detail for a file whose type mmindex does not take."""
    if ext.lower() in PICKLE_EXTS:
        return "refused pickle-like file", f"'.{ext}' files can run code when loaded; they are never read"
    shown = f"'.{ext}'" if ext else "no extension"
    return "unsupported file type", f"{shown} is not an image, audio, text (.txt) or metadata (.json) file"
