"""The index stage, declared as steps (see mmindex.stages): run in-process by default, on any Beam runner with
Beam options (a Dask cluster with ``--profile dask``).

    IndexFiles (one per modality of the space)
      -> plan      in the driver, from counts: nothing to do, up to date (BuiltIndex), or an IndexPlan (plan.py)
      -> train     in the driver, once per index: its trained, empty index (a bounded sample), then a Part per
                   new shard (parts.py). The stage starts from these, so that a cluster spreads the parts over
                   its workers as it spreads any stage's first elements (after a grouping step, Beam's DaskRunner
                   keeps every element in the one partition the group came from)
      -> AddShard  one part per shard, on the workers
      -> Finish    per index: the parts merged into on-disk lists, tuned, written as a new generation (build.py)
      -> BuiltIndex

Every step's memory is bounded by the memory budget or by one shard, never by the number of vectors: training
holds its sample, a part one shard's codes, the merge copies a range of lists at a time, and the keys are written
a shard at a time. Each step's output is a file named by the plan, so a rerun after a crash starts from what was
made, and the published generation serves until the new one is complete.
"""

from __future__ import annotations

from typing import Any

from mmindex.index.build import finish
from mmindex.index.built import BuiltIndex
from mmindex.index.parts import Part, PartAdded, Trained, add_part, train
from mmindex.index.plan import IndexPlan, plan
from mmindex.index.settings import BuildSettings
from mmindex.index.store import IndexFiles
from mmindex.stages import ByKey, Each, Stage


def _index_of(element: Trained | PartAdded) -> str:
    return element.plan.files.root if isinstance(element, Trained) else element.root


def started(indexes: list[IndexFiles], settings: BuildSettings, update: bool) -> list[Any]:
    """What the stage starts from, made in the driver: each index planned and trained (an index that an --update
    finds up to date is its BuiltIndex, which passes the steps untouched)."""
    planned = [p for files in indexes for p in plan(files, settings, update)]
    return [element for p in planned for element in (train(p) if isinstance(p, IndexPlan) else [p])]


def declare(indexes: list[IndexFiles], start: list[Any]) -> Stage:
    """The stage over ``indexes`` (of one space), from what ``started`` made."""
    return Stage("index", start, [
        Each("AddShard", add_part, Part, runs="cpu"),
        ByKey("Finish", finish, (Trained, PartAdded), key=_index_of, runs="cpu"),
    ], (BuiltIndex,), indexes[0].embeddings.dataset.scratch_path("index"))
