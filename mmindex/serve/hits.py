"""How a search hit is shown to HTTP clients: its sample's media URLs and thumbnail, never a file path."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from mmindex.serve.catalog import ServedDataset
from mmindex.serve.members import MEMBERS, member_kind


def media_urls(served: ServedDataset, key: str) -> dict[str, str]:
    kinds = {member_kind(ext) for ext in served.sample(key).members}
    return {member: f"/media/{quote(served.name)}/{quote(key)}/{member}" for member in MEMBERS if member in kinds}


def api_hit(served: ServedDataset, hit: dict[str, Any]) -> dict[str, Any]:
    media = media_urls(served, hit["key"])
    thumbnail = f"/thumbnail/{quote(served.name)}/{quote(hit['key'])}" if "image" in media else None
    sample = served.sample(hit["key"])
    return {"rank": hit["rank"], "score": round(hit["score"], 6), "modality": hit["modality"], "key": hit["key"],
            "caption": sample.caption, "name": sample.name, "media": media, "thumbnail": thumbnail}
