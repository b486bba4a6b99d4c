"""`mmindex dedup`: its options read into settings, the run, the printed report (registered by mmindex.cli)."""

from __future__ import annotations

from typing import Annotated

import typer

from mmindex import console
from mmindex.cli_options import Model, Profile, on_beam, split_options
from mmindex.sizes import HELP as SIZES


def dedup(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="A dataset made by `mmindex ingest`.", show_default=False)],
    model: Model = "offline",
    modality: Annotated[list[str] | None, typer.Option(
        help="Group only this modality: image, audio or text (repeat for several; default all).")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Similarity (0-1] from which two items are copies (default per modality: image 0.90, audio 0.99, "
             "text 0.90).")] = None,
    keep_list: Annotated[str | None, typer.Option(
        help="Write the keys to keep to this file, one a line: every sample but the non-representatives.")] = None,
    max_memory: Annotated[str, typer.Option(help=f"Memory the pair search may hold descriptors in: 4GB, 512MB ... "
                                                 f"({SIZES}). More passes over the queries when it is smaller.")]
    = "4GB",
    profile: Profile = None,
) -> None:
    """Find near-duplicate images, clips and texts across a dataset; print the groups and removable samples.

    Samples whose image, clip or text is the same as another's in another format, size, quality, crop (up to
    10%) or level form a group, stored under DATASET/duplicates/<space>/. Only shards new since the last run are
    described and compared against the rest: the groups equal a full run's. Each group keeps one representative:
    the most pixels, the longest clip or text, then the smallest key. `mmindex search --dedup` and `mmindex index
    --exclude-duplicates` of the same --model use the groups. Arguments of the form --name=value (such as
    --runner=...) or --profile run it on Beam.
    """
    from mmindex.dedup.run import DedupSettings
    from mmindex.dedup.run import dedup as run
    from mmindex.modalities import MODALITIES
    from mmindex.sizes import parse_size

    console.setup_logging()
    with console.errors():
        unexpected, beam_args = split_options(ctx.args, profile)
        if unexpected:
            raise typer.BadParameter(f"unexpected arguments: {' '.join(unexpected)}")
        settings = DedupSettings(dataset, model, tuple(modality or MODALITIES), threshold, keep_list,
                                 parse_size(max_memory))
        console.print_dedup(run(settings, on_beam(beam_args, 1)))

