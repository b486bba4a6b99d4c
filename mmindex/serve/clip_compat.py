"""clip-retrieval's back-end protocol, so ClipClient scripts and clip front work against mmindex.

POST /knn-service takes ClipClient's JSON (text, image as base64, embedding_input, modality, num_images,
indice_name, deduplicate; its safety and aesthetic options are accepted and ignored). ``deduplicate`` (true
unless false, as in clip-retrieval) leaves out hits that copy a better one: the dataset's groups where
`mmindex dedup` made them, else clip-retrieval's range check at cosine 0.94 over the hits. and answers a list of
{id, similarity, url, caption} (plus key, name and modality; plus image, base64, when ``include_image`` is true).
``id`` is the sample's row over the dataset's samples in shard order, stable as shards are added.
POST /metadata ({ids, indice_name}) gives the same fields by id, as clip front asks for further pages.
GET /indices-list names the datasets (and DATASET/SPACE for spaces other than each dataset's default).
image_url is refused: the server never fetches URLs it is given.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request

from mmindex.search import BadQuery, Query
from mmindex.serve import policy
from mmindex.serve.catalog import NotFound, ServedDataset
from mmindex.serve.fairness import Lanes, client_of
from mmindex.serve.hits import media_urls
from mmindex.serve.members import find_member
from mmindex.serve.policy import ApiError
from mmindex.serve.queries import read_json
from mmindex.serve.settings import ServeLimits

IGNORED = {"use_mclip", "use_safety_model", "use_violence_detector", "aesthetic_score",
           "aesthetic_weight", "num_result_ids"}
FIELDS = {"text", "image", "image_url", "embedding_input", "modality", "num_images", "indice_name", "include_image",
          "deduplicate"}


def router(catalog: dict[str, ServedDataset], limits: ServeLimits, lanes: Lanes) -> APIRouter:
    routes = APIRouter(tags=["clip-retrieval"])

    @routes.get("/indices-list")
    def indices_list() -> list[str]:
        return [name if space == served.default_space else f"{name}/{space}"
                for name, served in catalog.items() for space in served.spaces]

    @routes.post("/knn-service")
    async def knn_service(request: Request) -> list[dict[str, Any]]:
        fields = await read_json(request, limits)
        unknown = sorted(set(fields) - FIELDS - IGNORED)
        if unknown:
            raise ApiError(422, f"unknown field(s) {unknown} for /knn-service")
        if fields.get("image_url"):
            raise ApiError(422, "image_url is not supported (the server fetches no URLs): send the image as base64")
        asked = knn_request(fields, limits)
        return await lanes.run(client_of(request), frozenset(asked.query.parts()), asked.query.text, knn, catalog,
                               asked, str(request.base_url).rstrip("/"))

    @routes.post("/metadata")
    async def metadata(request: Request) -> list[dict[str, Any]]:
        fields = await read_json(request, limits)
        served = index_named(catalog, fields.get("indice_name"))[0]
        ids = policy.ids(fields.get("ids"), limits)
        base = str(request.base_url).rstrip("/")
        return [{"id": i, "metadata": described(served, served.key_of(i), None, base)} for i in ids]

    return routes


def index_named(catalog: dict[str, ServedDataset], indice_name: Any) -> tuple[ServedDataset, str | None]:
    """The dataset and space an ``indice_name`` (DATASET or DATASET/SPACE) names; the first dataset if none."""
    name, _, space = str(indice_name or next(iter(catalog))).partition("/")
    if name not in catalog:
        raise NotFound(f"no index {name!r} (see /indices-list)")
    return catalog[name], space or None


def described(served: ServedDataset, key: str, modality: str | None, base: str) -> dict[str, Any]:
    """A sample as clip-retrieval's metadata: caption and url (its image, else the member that was found), and
    the file name a hit without a caption is shown by."""
    urls = media_urls(served, key)
    url = urls.get("image") or urls.get(modality or "", "") or next(iter(urls.values()), "")
    sample = served.sample(key)
    return {"caption": sample.caption, "url": base + url, "key": key, "name": sample.name}


@dataclass(frozen=True)
class KnnRequest:
    indice_name: str | None
    modality: str
    k: int
    query: Query                  # a text or an image to embed, or embedding_input
    image_bytes: int              # the images an answer may carry (include_image), in all; 0: none
    dedup: float | None = None    # deduplicate: the similarity from which two hits are one


def knn_request(fields: dict[str, Any], limits: ServeLimits) -> KnnRequest:
    """ClipClient's request checked by the same policy as /search, before any work is queued."""
    modality = policy.modality(fields.get("modality", "image"), allow_all=False)
    k = policy.k(fields.get("num_images", 40), limits, "num_images")
    indice_name = policy.string("indice_name", fields.get("indice_name"))
    text, image = policy.text(fields.get("text"), limits), policy.media("image", fields.get("image"), limits)
    vector = policy.vector("embedding_input", fields.get("embedding_input"), limits)
    try:  # ClipClient sends a vector alone, its text and image fields null
        query = Query(vector=vector) if vector is not None else Query(text=text, image=image)
        query.parts()
    except BadQuery as err:
        raise ApiError(422, str(err)) from None
    images = limits.upload_bytes if fields.get("include_image") is True else 0
    dedup = policy.dedup(fields.get("deduplicate", True))
    return KnnRequest(indice_name, modality or "image", k, query, images, dedup)


def knn(catalog: dict[str, ServedDataset], asked: KnnRequest, base: str) -> list[dict[str, Any]]:
    served, space = index_named(catalog, asked.indice_name)
    hits = served.searcher(space).search(asked.query, asked.k, asked.modality, describe=False, dedup=asked.dedup)
    results, budget = [], asked.image_bytes
    for hit in hits:
        result = {"id": served.sample(hit["key"]).id, "similarity": hit["score"], "modality": hit["modality"],
                  **described(served, hit["key"], hit["modality"], base)}
        if asked.image_bytes and "image" in media_urls(served, hit["key"]):
            image = find_member(served, hit["key"], "image")
            budget -= image.size
            if budget < 0:  # an answer is held to what a request may send: no amplification
                raise ApiError(413, f"the images of {len(hits)} hits pass {asked.image_bytes:,} bytes: ask for fewer "
                               f"num_images, or for their URLs without include_image")
            result["image"] = base64.b64encode(image.bytes()).decode()
        results.append(result)
    return results
