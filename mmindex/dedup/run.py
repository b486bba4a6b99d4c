"""One ``mmindex dedup`` run: near-duplicate groups across a dataset, and the keep-list they imply.

The driver locks the dataset, lists the shards not described yet, has an executor run the stage's steps
(steps.py: the in-process executor, or Beam's from pipelines.executor) and reports per modality. Groups are
stored under duplicates/<space>/ (mmindex.dataset.duplicates), where `mmindex search --dedup` and
`mmindex index --exclude-duplicates` of that space find them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmindex.dataset import Dataset
from mmindex.dataset.duplicates import DuplicateStore, write_keep_list
from mmindex.dataset.lock import exclusive
from mmindex.dataset.samples import sample_keys
from mmindex.dedup.pairs import MAX_MEMORY
from mmindex.dedup.steps import ModalityGroups, ShardDescribed, declare
from mmindex.executors.local import LocalExecutor
from mmindex.modalities import MODALITIES
from mmindex.spaces import DEFAULT_SPACE, resolve_space
from mmindex.stages import Executor

# Chosen on benchmarks/dedup_bench.py's corpus (see benchmarks/RESULTS.md): copies score above, look-alikes below.
THRESHOLDS = {"image": 0.90, "audio": 0.99, "text": 0.90}


@dataclass(frozen=True)
class DedupSettings:
    dataset: str
    model: str = DEFAULT_SPACE
    modalities: tuple[str, ...] = MODALITIES
    threshold: float | None = None      # None: each modality's default (THRESHOLDS)
    keep_list: str | None = None        # where to write the keys to keep
    max_memory: int = MAX_MEMORY        # for the descriptors searched against at a time (pairs.py)

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"--threshold must be above 0 and at most 1, not {self.threshold}")
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown or not self.modalities:
            raise ValueError(f"--modality must be image, audio or text, not {', '.join(sorted(unknown))}")

    def thresholds(self) -> dict[str, float]:
        return {m: THRESHOLDS[m] if self.threshold is None else self.threshold for m in self.modalities}


@dataclass
class DedupReport:
    root: str
    space: str
    groups_path: str                      # the duplicates parquet: group, key, representative, similarity
    samples: int
    described: int = 0                    # shards described by this run
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> members that could not be described
    modalities: list[ModalityGroups] = field(default_factory=list)
    kept: int | None = None               # samples in the keep-list, when one was written
    keep_list: str | None = None


def dedup(settings: DedupSettings, executor: Executor | None = None) -> DedupReport:
    dataset = Dataset(settings.dataset)
    shards = dataset.committed_shards()
    if not shards:
        raise FileNotFoundError(f"{settings.dataset} has no ingested shards: run `mmindex ingest SOURCES --out "
                                f"{settings.dataset}` first")
    store = DuplicateStore(dataset, resolve_space(settings.model).name)
    keys = [key for n in shards for key in sample_keys(dataset.samples_path(n))]
    report = DedupReport(dataset.root, store.space, store.duplicates_path, len(keys))
    with exclusive(dataset, "dedup"):
        pending = sorted(set(shards) - set(store.described_shards()))
        stage = declare(store, pending, settings.thresholds(), settings.max_memory)
        for fact in (executor or LocalExecutor()).run(stage):
            if isinstance(fact, ShardDescribed):
                report.described += 1
                for reason, count in fact.skipped.items():
                    report.skipped[reason] = report.skipped.get(reason, 0) + count
            else:
                report.modalities.append(fact)
        report.modalities.sort(key=lambda m: m.modality)
        if settings.keep_list:
            keep = kept_keys(store, keys, settings.modalities)
            write_keep_list(settings.keep_list, keep)
            report.kept, report.keep_list = len(keep), settings.keep_list
    return report


def kept_keys(store: DuplicateStore, keys: list[str], modalities: tuple[str, ...]) -> list[str]:
    """Every sample but those a group of ``modalities`` can do without: one representative per group stays."""
    drop = store.removable(modalities)
    return [key for key in keys if key not in drop]
