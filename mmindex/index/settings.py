"""The settings of an index build (`mmindex index`'s options)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BuildSettings:
    max_memory: int = 4 * 2**30     # what any one step of the build may hold, and the index's codes
    target_recall: float = 0.95
    index_type: str | None = None   # a FAISS factory string, overriding the choice
    exclude_duplicates: bool = False   # leave out the non-representatives of `mmindex dedup`'s groups
