"""One ``mmindex embed`` run: lock the dataset, find the shards still to embed, run them, record stats."""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import asdict
from typing import Any

from mmindex.dataset import shard_name
from mmindex.embed.store import EmbeddingStore
from mmindex.embed.workers import RunReport, WorkerSettings, run_workers
from mmindex.spaces import Space

log = logging.getLogger("mmindex")


def embed_dataset(root: str, space: Space, settings: WorkerSettings) -> dict[str, Any]:
    """Embeds every committed shard of the dataset that has no committed embeddings in ``space`` yet."""
    store = EmbeddingStore.of(root, space)
    dataset = store.dataset
    space.modalities()  # fails early, before anything is written, if the model cannot be found
    with dataset.exclusive("embed"):
        store.claim()
        pending = store.pending()
        total = len(dataset.committed_shards())
        if not pending:
            return {"space": space.name, "pending": 0, "shards": total, "root": store.root}
        log.info("embed: %d of %d shard(s) to embed into space %r on %s", len(pending), total, space.name,
                 ", ".join(sorted(set(settings.devices))) + (f" x{len(settings.devices)}"
                                                             if len(settings.devices) > 1 else ""))
        started = time.monotonic()
        report = run_workers(store, pending, settings, on_shard=_log_shard)
        wall = time.monotonic() - started
        stats = _stats(report, settings, wall)
        store.record_run(stats)
    return {"space": space.name, "pending": len(pending), "shards": total, "root": store.root, "report": report,
            "stats": stats}


def _log_shard(summary: dict[str, Any]) -> None:
    if "failed" in summary:
        log.warning("embed: %s", summary["failed"])
        return
    embedded = ", ".join(f"{n} {m}" for m, n in sorted(summary["embedded"].items()))
    log.info("embed: shard %s committed on %s (%s)", shard_name(summary["number"]), summary["device"],
             embedded or "nothing to embed")


def _stats(report: RunReport, settings: WorkerSettings, wall: float) -> dict[str, Any]:
    per_modality = {}
    for modality, items in sorted(report.embedded.items()):
        seconds = report.seconds[modality]
        per_modality[modality] = {"embedded": items, "worker_seconds": round(seconds, 3),
                                  "per_worker_items_per_s": round(items / seconds, 2) if seconds else None}
    return {
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "shards": report.shards,
        "wall_seconds": round(wall, 3),
        "modalities": per_modality,
        "skipped": [{"modality": m, "reason": r, "items": n} for (m, r), n in sorted(report.skipped.items())],
        "failures": report.failures,
    }
