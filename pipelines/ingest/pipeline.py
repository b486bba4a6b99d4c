"""``python -m pipelines.ingest``: the ingest on Beam, with mmindex ingest's options and Beam's.

    python -m pipelines.ingest SRC... --out DATASET [--runner=FlinkRunner --flink_master=...]

The steps are mmindex.ingest's (declared in mmindex/ingest/steps.py), translated by pipelines.executor.
"""

from __future__ import annotations

import sys

from mmindex.ingest.run import IngestReport, ingest
from pipelines.executor import BeamExecutor


def run(argv: list[str] | None = None) -> IngestReport:
    """Runs the ingest on Beam; argv as `mmindex ingest` takes it. Returns the run's report."""
    from mmindex.cli import parse
    from mmindex.cli_options import ingest_settings

    settings, beam_args = ingest_settings(parse("ingest", sys.argv[1:] if argv is None else argv)[0])
    return ingest(settings, BeamExecutor(beam_args, settings.workers))
