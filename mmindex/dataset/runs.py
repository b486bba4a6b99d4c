"""mmindex.json: the dataset's format, counts and shards, and a record of every stage run that changed it.

    {"format": "mmindex-dataset", "format_version": 1, "created": ..., "counts": {...}, "shards": [...],
     "sources": [...], "runs": [{"stage": "ingest", "sources": [...], "settings": {...}, "counts": {...}, ...}]}

Repairs read the ingest runs back (which sources, with which limits and manifest columns) to rebuild shards.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mmindex import storage
from mmindex.dataset.layout import Dataset, shard_name
from mmindex.dataset.samples import totals

FORMAT = "mmindex-dataset"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RecordedSource:
    """One source an ingest run read, with the settings it was read with."""

    source: str
    limits: dict[str, Any]              # mmindex.media.Limits as a dict
    manifest_columns: dict[str, list[str]]


def ingest_settings(shard_size: str, limits: dict[str, Any], manifest_columns: dict[str, Any]) -> dict[str, Any]:
    """An ingest run's settings as recorded: what ``recorded_sources`` reads back."""
    return {"shard_size": shard_size, "limits": limits, "manifest_columns": manifest_columns}


def read_metadata(dataset: Dataset) -> dict[str, Any]:
    """mmindex.json ({} when there is none yet); refuses a file of another format or a newer version."""
    if not storage.exists(dataset.metadata_path):
        return {}
    metadata = json.loads(storage.read_bytes(dataset.metadata_path))
    if metadata.get("format") != FORMAT or metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{dataset.metadata_path} is not an mmindex dataset of format version "
                         f"<= {FORMAT_VERSION}; upgrade mmindex to read it")
    return metadata


def record_run(dataset: Dataset, run: dict[str, Any], sources: list[str]) -> None:
    """Adds a run to mmindex.json, with the counts and shards that the committed files give now."""
    metadata = read_metadata(dataset) or {"format": FORMAT, "format_version": FORMAT_VERSION,
                                          "created": run["started"], "runs": []}
    counted = totals(dataset)
    metadata.update(counts={k: counted[k] for k in ("samples", "bytes", "modalities")}, shards=counted["shards"])
    metadata["sources"] = sorted(set(metadata.get("sources", [])) | set(sources))
    metadata["runs"].append(run)
    storage.write_atomic(dataset.metadata_path, json.dumps(metadata, indent=2, sort_keys=True).encode())


def metadata_behind(dataset: Dataset) -> bool:
    """Whether mmindex.json does not list the committed shards: it was deleted, or a run was stopped between
    committing its last shard and recording itself."""
    recorded = [shard["name"] for shard in read_metadata(dataset).get("shards", [])]
    return recorded != [shard_name(n) for n in dataset.committed_shards()]


def recorded_sources(dataset: Dataset) -> list[RecordedSource]:
    """Every source an ingest of this dataset read, in the order of the runs."""
    found = []
    for run in read_metadata(dataset).get("runs", []):
        if run.get("stage") != "ingest":
            continue
        settings = run.get("settings", {})
        found += [RecordedSource(source, settings.get("limits", {}), settings.get("manifest_columns", {}))
                  for source in run.get("sources", [])]
    return found
