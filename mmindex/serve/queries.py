"""Reading a search request (JSON with base64 media, or a multipart upload) into a checked Query.

Every way a request can be wrong ends in ApiError: an HTTP status and one sentence that says what was wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from mmindex.modalities import MEDIA, MODALITIES
from mmindex.search import BadQuery, EmptyQuery, Query
from mmindex.serve import policy
from mmindex.serve.guards import BodyTooLarge
from mmindex.serve.policy import ApiError
from mmindex.serve.settings import ServeLimits

FIELDS = ("dataset", "space", *MODALITIES, "weights", "vector", "modality", "k", "dedup")


@dataclass(frozen=True)
class SearchRequest:
    query: Query
    dataset: str | None = None
    space: str | None = None
    modality: str | None = None     # only hits of this modality; None: all
    k: int = 10
    dedup: float | None = None      # no two hits alike from this similarity on (Searcher.distinct)


async def read_search(request: Request, limits: ServeLimits) -> SearchRequest:
    """A POST /search body as a SearchRequest; ApiError (4xx) for anything wrong with it."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        fields = await _form(request, limits)
    elif kind in ("application/json", ""):
        fields = await read_json(request, limits)
    else:
        raise ApiError(415, f"send the query as application/json or multipart/form-data, not {kind!r}")
    return search_request(fields, limits)


async def read_json(request: Request, limits: ServeLimits) -> dict[str, Any]:
    """The body as one JSON object. Parsing runs on the event loop and holds the interpreter, so a body of more
    values than any request needs (a huge list of numbers takes ~0.4 s for 20 MB) is refused unparsed."""
    body = await request.body()
    if body.count(b",") + body.count(b":") > limits.json_values:
        raise ApiError(413, f"the JSON body holds more than {limits.json_values:,} values: no request needs so many")
    try:
        fields = json.loads(body)
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
    dataset, space = policy.string("dataset", fields.get("dataset")), policy.string("space", fields.get("space"))
    text = policy.text(fields.get("text"), limits)
    modality = policy.modality(fields.get("modality"))
    k = policy.k(fields.get("k", 10), limits)
    weights = policy.weights(fields.get("weights"), limits)
    media = {name: policy.media(name, fields.get(name), limits) for name in MEDIA}
    try:
        query = Query(text, media["image"], media["audio"], weights, policy.vector("vector", fields.get("vector"),
                                                                                 limits))
        query.parts()
    except EmptyQuery:
        raise ApiError(422, 'empty query: send a "text", or an "image" or "audio" (base64 in JSON, or a file in a '
                            'multipart form), or a "vector" of the space (JSON)') from None
    except BadQuery as err:
        raise ApiError(422, str(err)) from None
    return SearchRequest(query, dataset, space, modality, k, policy.dedup(fields.get("dedup")))


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
