"""One ``mmindex embed`` run: the driver that every executor serves.

The driver resolves the space, locks the dataset, claims the space's folder, lists the shards still to embed,
has an executor run the stage's steps over them (declared in steps.py; the in-process executor by default, one
worker per device, or Beam's from pipelines.executor), tallies what each committed shard holds as it is reported,
and records the run in stats.json.
"""

from __future__ import annotations

import datetime
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmindex.dataset import Dataset, shard_name
from mmindex.dataset.embeddings import EmbeddingStore, ShardSummary, Skipped, dataset_space
from mmindex.dataset.lock import exclusive
from mmindex.embed.bridge import learn_bridge
from mmindex.embed.steps import declare, decode_processes, devices
from mmindex.encoders.device_decode import DECODES
from mmindex.executors.local import LocalExecutor
from mmindex.sizes import counted
from mmindex.spaces import DEFAULT_SPACE, Space
from mmindex.stages import Executor, Stage, WorkerDied, portable

log = logging.getLogger("mmindex")


@dataclass(frozen=True)
class EmbedSettings:
    dataset: str
    model: str = DEFAULT_SPACE
    gpus: int | None = None             # one worker per GPU (None: --device and --workers)
    device: str = "cpu"
    workers: int = 1
    batch_size: int = 64
    decode_workers: int | None = None   # per worker (None: 1 on CPU, a GPU's share of the cores less one)
    threads: int | None = None          # torch threads per worker (None: CPU workers share the cores)
    decode: str = "auto"                # where images are decoded: auto, cpu, device (encoders.device_decode)

    def __post_init__(self) -> None:
        for name in ("workers", "batch_size", "gpus", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.decode_workers is not None and self.decode_workers < 0:
            raise ValueError("--decode-workers must be 0 or more")
        if self.decode not in DECODES:
            raise ValueError(f"--decode must be one of {', '.join(DECODES)}, not {self.decode!r}")


@dataclass
class EmbedReport:
    space: str
    root: str
    shards: int                 # committed shards of the dataset
    pending: int                # of them, without embeddings in the space when the run began
    committed: int = 0          # shards this run committed
    embedded: Counter = field(default_factory=Counter)   # modality -> items
    skipped: Counter = field(default_factory=Counter)    # (modality, reason) -> items
    seconds: Counter = field(default_factory=Counter)    # modality -> worker seconds (where measured)
    waited: Counter = field(default_factory=Counter)     # of them, waiting for decoded input
    failures: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0
    wholly_skipped: list[Skipped] = field(default_factory=list)  # modalities of which no item has a vector

    def add(self, shard: ShardSummary) -> None:
        if shard.failed:
            self.failures.append(shard.failed)
            return
        self.committed += 1
        self.embedded.update(shard.embedded)
        self.skipped.update(shard.skipped)
        self.seconds.update(shard.seconds)
        self.waited.update(shard.waited)

    def rate(self, modality: str) -> float | None:
        """Items per second of one worker's time, where the executor measured it."""
        seconds = self.seconds[modality]
        return self.embedded[modality] / seconds if seconds else None

    def waiting(self, modality: str) -> float | None:
        """The share of the workers' time on a modality spent waiting for decoded input, where measured."""
        seconds = self.seconds[modality]
        return self.waited[modality] / seconds if seconds else None


def embed(settings: EmbedSettings, executor: Executor | None = None, space: Space | None = None) -> EmbedReport:
    """Embeds every committed shard of the dataset that has no committed embeddings in the space yet (``space``:
    the space already resolved, as a repair has it from the dataset's space.json)."""
    space = space or dataset_space(settings.dataset, settings.model)
    if space.settings["kind"] == "vectors":
        raise ValueError(f"space {space.name!r} holds imported vectors and has no encoder: add vectors to it with "
                         f"`mmindex import`, or embed with a model space (--model clip, ...)")
    store = EmbeddingStore.of(settings.dataset, space)
    space.modalities()  # fails early, before anything is written, if the model cannot be found
    executor = executor or LocalExecutor(devices=devices(settings.gpus, settings.device, settings.workers))
    with exclusive(store.dataset, "embed"):
        if space.settings["kind"] == "bridge" and store.space.mapping is None:  # learned once, before any vector
            store = EmbeddingStore(store.dataset, learn_bridge(store))
        store.claim()
        pending = sorted({*store.pending(), *store.damaged()})
        report = EmbedReport(space.name, store.root, len(store.dataset.committed_shards()), len(pending))
        if not pending:
            report.wholly_skipped = store.wholly_skipped()
            return report
        settings_used = _describe(executor, settings)
        described = {k: ", ".join(map(str, v)) if isinstance(v, list) else v for k, v in settings_used.items()}
        log.info("embed: %d of %s to embed into space %r (%s)", len(pending), counted(report.shards, "shard"),
                 space.name, "; ".join(f"{k.replace('_', ' ')} {v}" for k, v in described.items() if v is not None))
        started = time.monotonic()

        def committed(shard: ShardSummary) -> None:
            report.add(shard)
            _log_shard(shard)

        refused = {n: problem for n in pending if (problem := store.dataset.damaged_shard(n))}
        for number, problem in refused.items():  # a tar not of its recorded size: never embedded as it is
            committed(ShardSummary(number, failed=problem))
        rest = [n for n in pending if n not in refused]
        if rest:
            where = str if executor.local else portable  # a cluster's workers run in other folders
            stage = declare(EmbeddingStore(Dataset(where(store.dataset.root)), store.space), rest, settings.device,
                            settings.batch_size, settings.decode_workers, settings.threads, settings.decode,
                            where(store.dataset.scratch_path(f"embed-{uuid.uuid4().hex[:12]}")))
            report.failures += _embedded(executor, stage, committed)
            store.remove_incomplete()  # the temporary files of tasks that a cluster ran again after losing a worker
        report.wall_seconds = time.monotonic() - started
        store.record_run(_stats(report, settings_used))
        report.wholly_skipped = store.wholly_skipped()
    return report


def _embedded(executor: Executor, stage: Stage, committed: Callable[[ShardSummary], None]) -> list[str]:
    """Runs the stage, reporting each shard as it is committed; returns the failures beyond shards."""
    reported = set()
    try:
        for shard in executor.run(stage):
            reported.add(shard.number)
            committed(shard)
    except WorkerDied as died:  # the other workers' shards are committed; the next run embeds the rest
        return died.failures
    for number in stage.start:
        if number not in reported:
            committed(ShardSummary(number, failed=f"shard {shard_name(number)} was not committed by the pipeline"))
    return []


def _describe(executor: Executor, settings: EmbedSettings) -> dict[str, Any]:
    """How the run goes, as stats.json records it."""
    described = {**executor.describe(), "batch_size": settings.batch_size, "threads": settings.threads,
                 "decode": settings.decode}
    if executor.local:
        used = described.get("devices") or [settings.device] * described.get("workers", 1)
        described["decode_workers"] = decode_processes(settings.decode_workers, used[0], len(used))
    else:
        described["device"] = settings.device
    return described


def _log_shard(shard: ShardSummary) -> None:
    if shard.failed:
        log.warning("embed: %s", shard.failed)
        return
    embedded = ", ".join(f"{n} {m}" for m, n in sorted(shard.embedded.items()))
    log.info("embed: shard %s committed%s (%s)", shard_name(shard.number),
             f" on {shard.device}" if shard.device else "", embedded or "nothing to embed")


def _stats(report: EmbedReport, settings: dict[str, Any]) -> dict[str, Any]:
    """One run's entry in stats.json."""
    per_modality = {}
    for modality, items in sorted(report.embedded.items()):
        rate = report.rate(modality)
        per_modality[modality] = {"embedded": items, "worker_seconds": round(report.seconds[modality], 3),
                                  "waiting_seconds": round(report.waited[modality], 3),
                                  "per_worker_items_per_s": round(rate, 2) if rate else None}
    return {
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "shards": report.committed,
        "wall_seconds": round(report.wall_seconds, 3),
        "modalities": per_modality,
        "skipped": [{"modality": m, "reason": r, "items": n} for (m, r), n in sorted(report.skipped.items())],
        "failures": report.failures,
    }
