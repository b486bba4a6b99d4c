"""The one limits policy every endpoint applies to what a request asks for: texts, weights, k, ids, modalities
and uploaded media. Each check returns the value checked (a text cut to what the models read) or raises
ApiError with a 4xx status and one sentence; nothing a client sends reaches a model unchecked.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

from mmindex.media import Limits, Rejected, audio_errors, check_clip, image_errors, open_audio, open_image
from mmindex.modalities import MODALITIES
from mmindex.search import DEDUP_THRESHOLD
from mmindex.serve.settings import ServeLimits

TOO_LARGE = ("image too large", "audio too long")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_body(message: str) -> bytes:
    """The one shape of every refusal's body, {"error": "..."}: plain ASCII JSON, whatever the message quotes."""
    return json.dumps({"error": message}).encode()


def shown(value: Any) -> str:
    """A value as an error may quote it: short, and plain ASCII whatever the client sent."""
    try:
        return json.dumps(value)[:60]
    except (TypeError, ValueError):
        return type(value).__name__


def string(name: str, value: Any) -> str | None:
    """An optional string field: valid Unicode (no lone surrogates, which no model and no JSON encoder takes)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, f"{name} must be a string, not {shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(422, f"{name} must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def text(value: Any, limits: ServeLimits) -> str | None:
    """A query text within ``text_bytes``, cut to its first ``text_read`` characters (more than the few hundred
    tokens the text models read), so no text costs a model more than a normal query does."""
    value = string("text", value)
    if value is not None and len(value.encode()) > limits.text_bytes:
        raise ApiError(413, f"the text is over the limit of {limits.text_bytes:,} bytes")
    return None if value is None else value[:limits.text_read]


def k(value: Any, limits: ServeLimits, name: str = "k") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limits.max_k:
        raise ApiError(422, f"{name} must be a whole number from 1 to {limits.max_k}, not {shown(value)}")
    return value


def ids(value: Any, limits: ServeLimits) -> list[int]:
    if not isinstance(value, list) or len(value) > limits.max_k or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise ApiError(422, f"ids must be a list of at most {limits.max_k} whole numbers")
    return value


def modality(value: Any, allow_all: bool = True) -> str | None:
    """A modality to keep hits of; None (or "all" where allowed) for every modality."""
    if value in (None, "") or (allow_all and value == "all"):
        return None
    if value not in MODALITIES:
        raise ApiError(422, f"modality must be {', '.join(MODALITIES)}{' or all' if allow_all else ''}, "
                       f"not {shown(value)}")
    return value


def dedup(value: Any) -> float | None:
    """The similarity from which two hits are one (see Searcher.distinct): true for clip-retrieval's 0.94, or a
    number in (0, 1]; false or absent for none. Form fields say "true", "false" or a number."""
    if isinstance(value, str):
        value = _form_value(value)
    if value is None or value is False:
        return None
    if value is True:
        return DEDUP_THRESHOLD
    number = _finite(value)
    if number is None or not 0 < number <= 1:
        raise ApiError(422, f"dedup must be true, false or a similarity in (0, 1], not {shown(value)}")
    return number


def _form_value(value: str) -> Any:
    words = {"true": True, "on": True, "false": False, "off": False, "": None}
    if value.lower() in words:
        return words[value.lower()]
    try:
        return float(value)
    except ValueError:
        return value


def weights(value: Any, limits: ServeLimits) -> dict[str, float]:
    """A weight per query part: a finite number in [-max_weight, max_weight] (weights are relative, so the range
    loses nothing, and no sum of them overflows)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ApiError(422, f"weights must map modalities to numbers, e.g. {{\"text\": 1, \"image\": 0.5}}, not "
                       f"{shown(value)}")
    bound = limits.max_weight
    checked = {}
    for name, weight in value.items():
        if name not in MODALITIES:
            raise ApiError(422, f"weight for {shown(name)}: a query part is {', '.join(MODALITIES)}")
        number = _finite(weight)
        if number is None or not -bound <= number <= bound:
            raise ApiError(422, f"weight for {name!r} must be a finite number from {-bound:g} to {bound:g}, not "
                           f"{shown(weight)}")
        checked[name] = number
    return checked


def vector(name: str, value: Any, limits: ServeLimits) -> list[float] | None:
    """A query vector: a list of at most max_vector finite numbers (its length is checked against the index)."""
    if value is None:
        return None
    if not isinstance(value, list) or not 0 < len(value) <= limits.max_vector:
        raise ApiError(422, f"{name} must be a list of at most {limits.max_vector:,} numbers, not {shown(value)}")
    numbers = [_finite(v) for v in value]
    if None in numbers:
        raise ApiError(422, f"{name} must hold finite numbers only")
    return numbers  # type: ignore[return-value]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int past float's range
        return None
    return number if math.isfinite(number) else None


def media(name: str, value: Any, limits: ServeLimits) -> bytes | None:
    """An uploaded image or clip: the bytes of a file part, or of base64 (a data: URL too); checked against the
    limits by its header, before any model sees it."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        encoded = value.split(",", 1)[1] if value.startswith("data:") else value
        try:
            value = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, f"{name} must be base64 (or a data: URL, or a file in a multipart upload)") from None
    if not isinstance(value, bytes):
        raise ApiError(422, f"{name} must be base64 text, not {type(value).__name__}")
    if not value:
        raise ApiError(422, f"the {name} is empty")
    _check_media(name, value, limits)
    return value


def _check_media(name: str, data: bytes, limits: ServeLimits) -> None:
    """Refuses an image whose header declares more pixels, or a clip longer, than the server allows."""
    try:
        if name == "image":
            with image_errors():
                open_image(data, Limits(max_image_pixels=limits.image_pixels))
        else:
            with audio_errors(), open_audio(data) as clip:
                check_clip(clip, Limits(max_audio_seconds=limits.audio_seconds))
    except Rejected as err:
        raise ApiError(413 if err.reason in TOO_LARGE else 422, f"the {name}: {err}") from None
