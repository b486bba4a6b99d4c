"""`mmindex index`: its options read into settings, the build (or the check), the printed report (registered by
mmindex.cli)."""

from __future__ import annotations

from typing import Annotated

import typer

from mmindex import console
from mmindex.cli_options import ExcludeDuplicates, Model, Profile, index_settings, on_beam
from mmindex.sizes import HELP as SIZES


def index(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="A dataset with embeddings (`mmindex embed`).", show_default=False)],
    model: Model = "offline",
    max_memory: Annotated[str, typer.Option(help=f"Memory any one step of the build may hold, and the index's codes "
                                                 f"(per modality): 4GB, 512MB ... ({SIZES}).")] = "4GB",
    target_recall: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="recall@10 against exact search to tune for (1: exact search).")] = 0.95,
    index_type: Annotated[str | None, typer.Option(
        help="A FAISS factory string (e.g. 'IVF4096,PQ32', 'HNSW32,Flat') instead of the automatic choice.")]
    = None,
    update: Annotated[bool, typer.Option(help="Add newly embedded shards without retraining (then tune again).")]
    = False,
    exclude_duplicates: ExcludeDuplicates = False,
    check: Annotated[bool, typer.Option(
        help="Build nothing: check every index, id by id, against the embeddings and the samples.")] = False,
    profile: Profile = None,
) -> None:
    """Build one FAISS index per modality of a space, under DATASET/indexes/<space>/<modality>/.

    Exact search while the dataset is small, then IVF (Flat, SQ8 or PQ) as it grows and the memory budget
    requires. Compressed codes are re-ranked with the exact vectors of the embeddings (on disk). nprobe (or
    efSearch) and the re-rank depth are tuned on held-out queries of every modality until recall@10 against
    exact search meets the target; the measured recall is recorded with the index.

    An IVF index is built from parts: trained once on a sample, one part per shard, merged into inverted lists
    on disk that searches memory-map. Arguments of the form --name=value (such as --runner=FlinkRunner) or
    --profile build the parts on Beam (a Dask cluster with --profile dask): the same bytes as a local build.
    A build that dies leaves the published index serving; the same command then finishes it.
    """
    from mmindex.check.indexes import check_indexes
    from mmindex.index.run import build_indexes

    console.setup_logging()
    with console.errors():
        settings, beam_args = index_settings(ctx.params, ctx.args)
        if not check:
            console.print_index(build_indexes(settings, executor=on_beam(beam_args, 1)))
            return
        checked = check_indexes(settings)
        console.print_check(checked)
        if checked.not_embedded:
            raise RuntimeError(checked.not_embedded)
