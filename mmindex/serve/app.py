"""The HTTP API: routes, and the one error shape every refusal takes ({"error": "..."} with a 4xx status).

Model calls and file reads run in threads, never on the event loop, so requests are served concurrently.
Each model runs one query at a time (Searcher; the multilingual text encoder takes its own turns). Searches take
threads from lanes shared fairly between client addresses (fairness.py): one client's heavy queries cannot
stall everyone.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mmindex.modalities import MODALITIES
from mmindex.search import BadQuery
from mmindex.serve import clip_compat
from mmindex.serve.catalog import NotFound, ServedDataset, pick
from mmindex.serve.fairness import Lanes, client_of
from mmindex.serve.guards import BodyLimit, BodyTooLarge, Timeout, TokenAuth
from mmindex.serve.hits import api_hit
from mmindex.serve.members import RangeNotSatisfiable, byte_range, find_member
from mmindex.serve.policy import ApiError, error_body
from mmindex.serve.queries import SearchRequest, read_search
from mmindex.serve.settings import ServeLimits, ServeSettings
from mmindex.serve.thumbnails import Thumbnails

log = logging.getLogger("mmindex")
STATIC = Path(__file__).parent / "static"
IMMUTABLE = "public, max-age=31536000, immutable"   # keys are content digests: a member's bytes never change
SEARCH_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "dataset": {"type": "string"}, "space": {"type": "string"}, "text": {"type": "string"},
        "image": {"type": "string", "description": "base64 (or a data: URL)"},
        "audio": {"type": "string", "description": "base64 (or a data: URL)"},
        "vector": {"type": "array", "items": {"type": "number"}, "maxItems": ServeLimits.max_vector,
                   "description": "a vector of the space, alone (its dimension)"},
        "weights": {"type": "object", "additionalProperties": {"type": "number", "minimum": -ServeLimits.max_weight,
                                                                "maximum": ServeLimits.max_weight}},
        "modality": {"type": "string", "enum": [*MODALITIES, "all"]},
        "k": {"type": "integer", "minimum": 1, "maximum": ServeLimits.max_k},
        "dedup": {"oneOf": [{"type": "boolean"}, {"type": "number", "exclusiveMinimum": 0, "maximum": 1}],
                  "description": "no two hits copies: a group of `mmindex dedup`, or alike from this similarity "
                                 "(true: 0.94) where the modality was not grouped"}}}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "text": {"type": "string"}, "image": {"type": "string", "format": "binary"},
        "audio": {"type": "string", "format": "binary"}, "weights": {"type": "string"},
        "modality": {"type": "string"}, "k": {"type": "integer"}, "dataset": {"type": "string"},
        "space": {"type": "string"}, "dedup": {"type": "string"}}}}}}}


def create_app(settings: ServeSettings, catalog: dict[str, ServedDataset]) -> FastAPI:
    limits = settings.limits
    app = FastAPI(title="mmindex", description="Search images, audio and text across modalities.", docs_url=None,
                  redoc_url=None)
    thumbnails = Thumbnails(limits.image_pixels)
    lanes = Lanes(limits.client_queue)
    _errors(app)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    def info() -> dict[str, Any]:
        return {"datasets": [served.info() for served in catalog.values()], "limits": dataclasses.asdict(limits)}

    @app.post("/search", openapi_extra=SEARCH_BODY)
    async def search(request: Request) -> dict[str, Any]:
        """Text, image and audio parts fused into one query; hits of every modality, or only ``modality``."""
        asked = await read_search(request, limits)
        return await lanes.run(client_of(request), frozenset(asked.query.parts()), asked.query.text, run_search,
                               catalog, asked)

    @app.get("/media/{dataset}/{key:path}/{member}")
    def media(dataset: str, key: str, member: str, request: Request) -> Response:
        """A sample's member streamed from its shard; HTTP Range supported (audio can seek)."""
        found = find_member(pick(catalog, dataset), checked_key(key), member)
        headers = {"Accept-Ranges": "bytes", "Cache-Control": IMMUTABLE, "ETag": f'"{key}.{found.ext}"',
                   "X-Content-Type-Options": "nosniff"}
        try:
            wanted = byte_range(request.headers.get("range"), found.size)
        except RangeNotSatisfiable:
            return error(416, f"the range {request.headers.get('range')} lies outside the member's {found.size:,} "
                              f"bytes", {**headers, "Content-Range": f"bytes */{found.size}"})
        if wanted is None:
            return StreamingResponse(found.read(), 200, {**headers, "Content-Length": str(found.size)},
                                     media_type=found.content_type)
        start, end = wanted
        headers.update({"Content-Range": f"bytes {start}-{end}/{found.size}", "Content-Length": str(end - start + 1)})
        return StreamingResponse(found.read(start, end), 206, headers, media_type=found.content_type)

    @app.get("/thumbnail/{dataset}/{key:path}")
    def thumbnail(dataset: str, key: str, size: int = Query(256, ge=limits.thumbnail_sizes[0],
                                                             le=limits.thumbnail_sizes[1])) -> Response:
        """A JPEG of the sample's image, its longer side ``size`` pixels (made once, then cached)."""
        served = pick(catalog, dataset)
        image = find_member(served, checked_key(key), "image")  # an unknown key is a 404 even when cached
        try:
            made = thumbnails.get((served.name, key, size), image.bytes)
        except Exception as err:
            raise ApiError(422, f"the image of sample {key!r} cannot be shown: {err}") from None
        return Response(made, media_type="image/jpeg", headers={"Cache-Control": IMMUTABLE})

    app.include_router(clip_compat.router(catalog, limits, lanes))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _docs(app)
    # the last added runs first: refuse strangers, then oversized bodies, then time the rest
    app.add_middleware(Timeout, seconds=limits.timeout_s)
    app.add_middleware(BodyLimit, limit=limits.upload_bytes, budget=max(limits.bodies_bytes, limits.upload_bytes))
    if settings.token:
        app.add_middleware(TokenAuth, token=settings.token)
    if settings.cors_origins:  # outermost: a browser's preflight carries no token
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "Range"])
    return app


def _docs(app: FastAPI) -> None:
    """The OpenAPI page at /docs, with Swagger UI's files served from the package swagger-ui-bundle (FastAPI's
    default page loads them from a CDN, and shows nothing offline)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="mmindex API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")


def run_search(catalog: dict[str, ServedDataset], asked: SearchRequest) -> dict[str, Any]:
    served = pick(catalog, asked.dataset)
    searcher = served.searcher(asked.space)
    started = time.perf_counter()
    hits = searcher.search(asked.query, asked.k, asked.modality, describe=False, dedup=asked.dedup)
    took = (time.perf_counter() - started) * 1000
    return {"dataset": served.name, "space": searcher.store.space.name, "took_ms": round(took, 2),
            "hits": [api_hit(served, hit) for hit in hits]}


def checked_key(key: str) -> str:
    """A key as a media URL may give it: refused outright when it looks like a file path."""
    if key.startswith("/") or "\\" in key or ".." in key.split("/") or "\x00" in key:
        raise ApiError(400, "media URLs name a sample's key, never a file path")
    return key


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A refusal as {"error": "..."}: what was wrong, in one sentence."""
    return Response(error_body(message), status, headers, media_type="application/json")


def _errors(app: FastAPI) -> None:
    """Every exception a request may end in, as a refusal (error)."""
    app.add_exception_handler(ApiError, lambda _, err: error(err.status, err.message))
    app.add_exception_handler(NotFound, lambda _, err: error(404, str(err)))
    app.add_exception_handler(BadQuery, lambda _, err: error(422, str(err)))
    app.add_exception_handler(BodyTooLarge, lambda _, err: error(413, str(err)))
    app.add_exception_handler(ClientDisconnect, lambda _, err: error(400, "the client left before its body arrived"))
    app.add_exception_handler(HTTPException, lambda _, err: error(err.status_code, str(err.detail)))
    app.add_exception_handler(RequestValidationError, lambda _, err: error(422, "; ".join(
        f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in err.errors())))

    @app.exception_handler(Exception)
    async def failed(_: Request, err: Exception) -> Response:
        log.exception("serve: request failed")
        return error(500, f"the server failed: {type(err).__name__}: {err}")
