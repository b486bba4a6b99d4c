"""``python -m pipelines.index``: the index build on Beam, with mmindex index's options and Beam's.

    python -m pipelines.index DATASET [--model offline] [--max-memory 4GB] [Beam options]

The steps are mmindex.index's (declared in mmindex/index/steps.py), translated by pipelines.executor: the
workers train each index once and fill one part per shard; each index's parts are merged into its on-disk lists
by one worker. Every step writes what it makes to the dataset, so the workers must share its file system (or
object store) with the driver.
"""

from __future__ import annotations

import sys

from mmindex.index.run import IndexReport, build_indexes
from pipelines.executor import BeamExecutor


def run(argv: list[str] | None = None) -> IndexReport:
    """Builds the indexes on Beam; argv as `mmindex index` takes it. Returns the run's report."""
    from mmindex.cli import parse
    from mmindex.cli_options import index_settings

    settings, beam_args = index_settings(*parse("index", sys.argv[1:] if argv is None else argv))
    return build_indexes(settings, executor=BeamExecutor(beam_args))
