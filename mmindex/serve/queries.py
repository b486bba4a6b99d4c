"""Reading a search request (JSON with base64 media, or a multipart upload) into a checked Query.

Every way a request can be wrong ends in ApiError: an HTTP status and one sentence that says what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from mmindex.media import Limits, Rejected, audio_errors, check_clip, image_errors, open_audio, open_image
from mmindex.modalities import MEDIA, MODALITIES
from mmindex.search import BadQuery, Query
from mmindex.serve.guards import BodyTooLarge
from mmindex.serve.settings import ServeLimits

FIELDS = ("dataset", "space", *MODALITIES, "weights", "modality", "k")
TOO_LARGE = ("image too large", "audio too long")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SearchRequest:
    query: Query
    dataset: str | None = None
    space: str | None = None
    modality: str | None = None     # only hits of this modality; None: all
    k: int = 10


async def read_search(request: Request, limits: ServeLimits) -> SearchRequest:
    """A POST /search body as a SearchRequest; ApiError (4xx) for anything wrong with it."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        fields = await _form(request, limits)
    elif kind in ("application/json", ""):
        fields = await read_json(request)
    else:
        raise ApiError(415, f"send the query as application/json or multipart/form-data, not {kind!r}")
    return search_request(fields, limits)


async def read_json(request: Request) -> dict[str, Any]:
    try:
        fields = json.loads(await request.body())
    except (ValueError, RecursionError) as err:
        raise ApiError(400, f"the body is not valid JSON ({str(err)[:100]}): send one JSON object") from None
    if not isinstance(fields, dict):
        raise ApiError(422, f"the body must be a JSON object, not {type(fields).__name__}")
    return fields


async def _form(request: Request, limits: ServeLimits) -> dict[str, Any]:
    try:
        form = await request.form(max_files=2, max_fields=len(FIELDS), max_part_size=limits.upload_bytes)
    except BodyTooLarge:
        raise
    except Exception as err:  # python-multipart and Starlette raise several types for malformed bodies
        raise ApiError(400, f"the multipart body cannot be read: {err}") from None
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if name in fields:
            raise ApiError(422, f"field {name!r} is given twice")
        if isinstance(value, UploadFile):
            if name not in MEDIA:
                raise ApiError(422, f"field {name!r} is a file: only image and audio may be uploaded")
            fields[name] = await value.read()
        elif name in MEDIA:
            fields[name] = value  # base64 in a form field works too
        elif name == "weights":
            fields[name] = _json_field(name, value)
        elif name == "k":
            fields[name] = _int_field(name, value)
        else:
            fields[name] = value
    return fields


def search_request(fields: dict[str, Any], limits: ServeLimits) -> SearchRequest:
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ApiError(422, f"unknown field(s) {unknown}: a search takes {', '.join(FIELDS)}")
    for name in ("dataset", "space", "text", "modality"):
        if fields.get(name) is not None and not isinstance(fields[name], str):
            raise ApiError(422, f"{name} must be a string, not {json.dumps(fields[name])[:60]}")
    if len((fields.get("text") or "").encode()) > limits.text_bytes:
        raise ApiError(413, f"the text is over the limit of {limits.text_bytes:,} bytes")
    modality = fields.get("modality") or None
    if modality == "all":
        modality = None
    if modality is not None and modality not in MODALITIES:
        raise ApiError(422, f"modality must be image, audio, text or all, not {modality!r}")
    k = fields.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limits.max_k:
        raise ApiError(422, f"k must be a whole number from 1 to {limits.max_k}, not {json.dumps(k)[:60]}")
    media = {name: media_bytes(name, fields.get(name), limits) for name in MEDIA}
    try:
        query = Query(fields.get("text"), media["image"], media["audio"], fields.get("weights") or {})
        query.parts()
    except BadQuery as err:
        raise ApiError(422, str(err)) from None
    return SearchRequest(query, fields.get("dataset"), fields.get("space"), modality, k)


def media_bytes(name: str, value: Any, limits: ServeLimits) -> bytes | None:
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
    check_media(name, value, limits)
    return value


def check_media(name: str, data: bytes, limits: ServeLimits) -> None:
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


def _json_field(name: str, value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        raise ApiError(422, f"{name} must be JSON, e.g. {{\"text\": 1, \"image\": 0.5}}") from None


def _int_field(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ApiError(422, f"{name} must be a whole number, not {value[:40]!r}") from None
