"""The index stage, declared as steps (see mmindex.stages): run in-process by default, on any Beam runner with
Beam options (a Dask cluster with ``--profile dask``).

    IndexFiles (one per modality of the space)
      -> Plan      counts only, in the driver: nothing to do, up to date (BuiltIndex), or an IndexPlan (plan.py)
      -> Train     per index: its trained, empty index, made once (a bounded sample); then a Part per new shard
                   (parts.py). A grouping step, so that on a cluster its parts are spread over the workers again
      -> AddShard  one part per shard, on the workers
      -> Finish    per index: the parts merged into on-disk lists, tuned, written as a new generation (build.py)
      -> BuiltIndex

Every step's memory is bounded by the memory budget or by one shard, never by the number of vectors: training
holds its sample, a part one shard's codes, the merge streams list by list into a memory-mapped file, and the
keys are written a shard at a time. Each step's output is a file named by the plan, so a rerun after a crash
starts from what was made, and the published generation serves until the new one is complete.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from mmindex.index.build import finish
from mmindex.index.built import BuiltIndex
from mmindex.index.parts import Part, PartAdded, Trained, add_part, train
from mmindex.index.plan import IndexPlan, plan
from mmindex.index.settings import BuildSettings
from mmindex.index.store import IndexFiles
from mmindex.stages import ByKey, Each, Stage


def _index_of(element: IndexPlan | Trained | PartAdded) -> str:
    if isinstance(element, PartAdded):
        return element.root
    return (element if isinstance(element, IndexPlan) else element.plan).files.root


def _train(root: str, plans: list[IndexPlan]) -> Iterator[Trained | Part]:
    return train(plans[0])


def declare(indexes: list[IndexFiles], settings: BuildSettings, update: bool) -> Stage:
    """The stage over ``indexes`` (of one space)."""
    return Stage("index", indexes, [
        Each("Plan", partial(plan, settings=settings, update=update), IndexFiles),
        ByKey("Train", _train, IndexPlan, key=_index_of, runs="cpu"),
        Each("AddShard", add_part, Part, runs="cpu"),
        ByKey("Finish", finish, (Trained, PartAdded), key=_index_of, runs="cpu"),
    ], (BuiltIndex,), indexes[0].embeddings.dataset.scratch_path("index"))
