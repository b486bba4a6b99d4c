"""Committing results: shard tars and their samples parquet, the rejects parquet, and mmindex.json."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from typing import Any

from mmindex import storage
from mmindex.dataset import REJECTS_SCHEMA, SAMPLES_SCHEMA, Dataset, parquet_bytes, shard_name
from mmindex.media import Limits
from mmindex.shards import write_tar
from pipelines.ingest.inspect import load_member
from pipelines.ingest.records import DUPLICATE, Reject, SampleRecord

log = logging.getLogger("mmindex")


class SourceChanged(RuntimeError):
    """A file changed between validation and writing; its shard is not committed."""


def _member_bytes(record: SampleRecord, limits: Limits) -> dict[str, bytes]:
    members = {}
    for ext, member in record.members.items():
        data = load_member(member, limits)
        if hashlib.sha256(data).hexdigest() != record.digests[ext]:
            raise SourceChanged(f"{record.source} changed while it was being ingested; run the ingest again")
        members[ext] = data
    return members


def write_shard(number: int, records: list[SampleRecord], dataset: Dataset, limits: Limits) -> dict[str, Any]:
    """Writes one shard and then its samples parquet (the commit); returns the shard's summary."""
    records = list({r.key: r for r in sorted(records, key=lambda r: r.key)}.values())  # a SRC given twice
    name = shard_name(number)
    with storage.atomic_writer(dataset.shard_path(number)) as out:
        write_tar(out, ((r.key, _member_bytes(r, limits)) for r in records))
    rows = [{**r.row, "key": r.key, "shard": name} for r in records]
    storage.write_atomic(dataset.samples_path(number), parquet_bytes(rows, SAMPLES_SCHEMA))
    log.info("ingest: wrote shard %s (%s samples, %.1f MB)", name, f"{len(records):,}", out.size / 1e6)
    return {"name": name, "samples": len(records), "bytes": out.size, "sha256": out.sha256.hexdigest()}


def write_rejects(rejects: list[Reject], dataset: Dataset) -> str | None:
    """Writes the rejects not listed before, under a name derived from their content (so a repeat is a no-op)."""
    if not rejects:
        return None
    rows = sorted({(r.source, r.reason, r.detail) for r in rejects})
    data = parquet_bytes([dict(zip(("source", "reason", "detail"), row, strict=True)) for row in rows],
                         REJECTS_SCHEMA)
    name = hashlib.sha256(data).hexdigest()[:16]
    path = dataset.rejects_path(name)
    if not storage.exists(path):
        storage.write_atomic(path, data)
    return path


def finalize(
    _: Any, dataset: Dataset, run: dict[str, Any], scratch: str, recorded: set[tuple[str, str, str]],
    shards: list[dict], rejects: list[Reject], found: int, already_present: int, report_path: str | None,
) -> dict[str, Any]:
    """Records the run in mmindex.json when it changed anything, writes its report, clears its scratch."""
    storage.delete(storage.glob(f"{scratch}-*"))  # decompressed tars: every shard that read them is written
    fresh = [r for r in rejects if (r.source, r.reason, r.detail) not in recorded]
    duplicates = [r for r in rejects if r.reason == DUPLICATE]
    rejected = [r for r in rejects if r.reason != DUPLICATE]
    by_reason = Counter(r.reason for r in rejected)
    shards = sorted(shards, key=lambda s: s["name"])
    counts = {
        "found": found,
        "ingested": sum(s["samples"] for s in shards),
        "rejected": len(rejected),
        "duplicates": len(duplicates) + already_present,
        "duplicates_in_run": len(duplicates),
        "already_present": already_present,
        "bytes_written": sum(s["bytes"] for s in shards),
        "rejected_by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    report = {**run, "finished": time.time(), "counts": counts, "shards_added": shards,
              "rejects_file": write_rejects(fresh, dataset), "changed": bool(shards or fresh)}
    if report["changed"]:
        metadata = dataset.read_metadata() or {"format": "mmindex-dataset", "format_version": 1,
                                               "created": run["started"], "runs": []}
        totals = dataset.totals()
        metadata.update(counts={k: totals[k] for k in ("samples", "bytes", "modalities")},
                        shards=totals["shards"])
        metadata["sources"] = sorted(set(metadata.get("sources", [])) | set(run["sources"]))
        metadata["runs"].append({k: v for k, v in report.items() if k != "changed"})
        dataset.write_metadata(metadata)
    if report_path:
        storage.write_atomic(report_path, json.dumps(report, indent=2).encode())
    return report
