"""The index stage's fact: one modality's index as its info.json records it, for the driver's report."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmindex.index.searchable import describe_search
from mmindex.index.store import IndexFiles


@dataclass(frozen=True)
class BuiltIndex:
    modality: str
    root: str
    vectors: int
    type: str
    search: str              # how it is searched: 'exact', 'nprobe=8, re-rank 4x' ...
    recall_at_10: float
    bytes: int
    build_seconds: float
    target_met: bool
    up_to_date: bool = False  # an --update found nothing new: nothing was built
    excluded: int = 0         # near-duplicates left out (--exclude-duplicates)

    @classmethod
    def of(cls, files: IndexFiles, info: dict[str, Any], up_to_date: bool = False) -> BuiltIndex:
        return cls(files.modality, files.root, info["vectors"], info["type"], describe_search(info),
                   info["recall_at_10"], info["bytes"], info["build_seconds"], info.get("target_met", True),
                   up_to_date, info.get("excluded", {}).get("vectors", 0))
