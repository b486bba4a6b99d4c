"""``python -m pipelines.embed``: the embed on Beam, with mmindex embed's options and Beam's.

    python -m pipelines.embed DATASET [--model offline] [--batch-size 64] [--device cpu] [Beam options]

The steps are mmindex.embed's (declared in mmindex/embed/steps.py), translated by pipelines.executor: each
worker loads the space's encoders once and embeds whole shards, forming the same batches as the in-process
executor, so the vectors do not depend on where they were made.
"""

from __future__ import annotations

import sys

from mmindex.embed.run import EmbedReport, embed
from pipelines.executor import BeamExecutor


def run(argv: list[str] | None = None) -> EmbedReport:
    """Runs the embed on Beam; argv as `mmindex embed` takes it. Returns the run's report."""
    from mmindex.cli import parse
    from mmindex.cli_options import embed_settings

    settings, beam_args = embed_settings(*parse("embed", sys.argv[1:] if argv is None else argv))
    return embed(settings, BeamExecutor(beam_args, settings.workers))
