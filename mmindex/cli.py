"""The ``mmindex`` command: parse options into a stage's typed settings, run the stage, print its report.

Stages live in mmindex/<stage>/ and print nothing; console.py prints their reports. Every command fails the
same way: an error the user can act on is one line on stderr and exit status 2 (see ``console.errors``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mmindex import console
from mmindex.cli_dedup import dedup
from mmindex.cli_import import QueryVectors, import_command
from mmindex.cli_index import index
from mmindex.cli_options import (
    DEFAULT_DATASET_HELP,
    EXTRA_ARGS,
    SOURCES_HELP,
    Decode,
    Dedup,
    DedupThreshold,
    Model,
    Profile,
    Verbose,
    Version,
    default_dataset,
    embed_settings,
    ingest_settings,
    on_beam,
    search_queries,
)
from mmindex.ingest.plan import DEFAULT_SHARD_SIZE
from mmindex.media import Limits
from mmindex.sizes import HELP as SIZES

app = typer.Typer(help="Make a multimodal corpus (images, audio, text) searchable across modalities.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.command(name="import")(import_command)


@app.callback()
def _options(version: Version = False) -> None:
    """Make a multimodal corpus (images, audio, text) searchable across modalities."""


@app.command(context_settings=EXTRA_ARGS)
def ingest(
    ctx: typer.Context,
    sources: Annotated[list[str], typer.Argument(help=SOURCES_HELP, show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset folder to create, or to add new samples to.")],
    shard_size: Annotated[str, typer.Option(help=f"Samples and/or bytes per shard: 10000, 512MB or 10000,1GB "
                                                 f"({SIZES}).")] = DEFAULT_SHARD_SIZE,
    workers: Annotated[int, typer.Option(help="Processes on this machine (1: one process, checking on threads).")]
    = 1,
    max_file_bytes: Annotated[str, typer.Option(help="Refuse files larger than this (a size).")] = "512MiB",
    max_image_pixels: Annotated[int, typer.Option(help="Refuse images declaring more pixels (decompression bombs).")]
    = Limits.max_image_pixels,
    max_text_bytes: Annotated[str, typer.Option(help="Refuse captions and texts longer than this (a size).")]
    = "64KiB",
    max_audio_seconds: Annotated[float, typer.Option(help="Refuse audio clips longer than this.")]
    = Limits.max_audio_seconds,
    image_column: Annotated[str | None, typer.Option(help="Manifest column holding image paths.")] = None,
    audio_column: Annotated[str | None, typer.Option(help="Manifest column holding audio paths.")] = None,
    caption_column: Annotated[str | None, typer.Option(help="Manifest column holding captions or texts.")] = None,
    profile: Profile = None,
    verbose: Verbose = False,
) -> None:
    """Validate and shard a raw corpus into DATASET: webdataset tars plus samples and rejects tables (parquet).

    Bad or hostile inputs never stop the run: each lands in the rejects parquet with a reason. Running
    the same ingest again does nothing; new inputs go into new shards, finished shards are never touched.
    """
    from mmindex.ingest.run import ingest as run

    console.setup_logging(verbose)
    with console.errors():
        settings, beam_args = ingest_settings(ctx.params)
        console.print_ingest(run(settings, on_beam(beam_args, settings.workers)), out)


@app.command(context_settings=EXTRA_ARGS)
def embed(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="A dataset made by `mmindex ingest`.", show_default=False)],
    model: Model = "offline",
    gpus: Annotated[int | None, typer.Option(help="One worker process per GPU, fp16 (default: use --device).")]
    = None,
    device: Annotated[str, typer.Option(help="Device for --workers: cpu, cuda, cuda:1 ...")] = "cpu",
    workers: Annotated[int, typer.Option(help="Worker processes on --device (each loads the models).")] = 1,
    batch_size: Annotated[int, typer.Option(help="Items per model forward pass.")] = 64,
    decode_workers: Annotated[int | None, typer.Option(
        help="Decode processes per worker, preparing the next batches while one is encoded (0: none). "
             "Default: 1 on CPU; per GPU, its share of the cores less one (at most 8).")] = None,
    threads: Annotated[int | None, typer.Option(
        help="Torch threads per worker (default: CPU workers share the cores). On CPU, vectors are bit-identical "
             "for any --workers, and in the offline space for any --threads (other spaces': may differ in a last bit)."
    )] = None,
    decode: Decode = "auto",
    profile: Profile = None,
    verbose: Verbose = False,
) -> None:
    """Embed every sample's image, audio and text into one vector space, under DATASET/embeddings/<space>/.

    Finished shards are committed one by one: a killed run resumes where it stopped, and a repeat does
    nothing. Media a model cannot read, and audio with no speech for the offline space, are skipped with a
    reason listed per item and counted in the summary. Arguments of the form --name=value (such as
    --runner=FlinkRunner) or --profile run the same step on Beam (each worker loads the encoders once and embeds
    whole shards) instead of the local worker processes.
    """
    from mmindex.embed.run import embed as run

    console.setup_logging(verbose)
    with console.errors():
        settings, beam_args = embed_settings(ctx.params, ctx.args)
        report = run(settings, on_beam(beam_args, settings.workers))
    console.print_embed(report)
    if report.failures:
        raise typer.Exit(1)


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="Text to search for.", show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help=f"Dataset to search ({DEFAULT_DATASET_HELP}).")]
    = None,
    model: Model = "offline",
    image: Annotated[str | None, typer.Option(help="An image file as (part of) the query.")] = None,
    audio: Annotated[str | None, typer.Option(help="An audio file as (part of) the query.")] = None,
    modality: Annotated[str, typer.Option(help="What to return: image, audio, text or all.")] = "all",
    k: Annotated[int, typer.Option("-k", min=1, help="Number of results.")] = 10,
    weight: Annotated[list[str] | None, typer.Option(
        help="Weight of a query part when several are fused, e.g. --weight image=0.3 (default 1 each).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    dedup: Dedup = False,
    dedup_threshold: DedupThreshold = 0.94,
    queries: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="A file of queries, one per line: plain text, or JSON {text, image, audio, weights}. Writes JSONL: "
             "each line the query and its results, or the error that stopped it (exit status 1 if any).")]
    = None,
    vectors: QueryVectors = None,
) -> None:
    """Find the images, sounds and texts nearest to a text, an image or a clip (or several, fused), or to vectors."""
    from mmindex.dataset.embeddings import dataset_space
    from mmindex.modalities import MODALITIES
    from mmindex.search import Searcher, search_batch

    if modality not in (*MODALITIES, "all"):
        raise typer.BadParameter("choose image, audio, text or all", param_hint="--modality")
    console.setup_logging()
    failed = 0
    with console.errors():
        batch = search_queries(query, image, audio, weight or [], queries, vectors)
        targets = None if modality == "all" else [modality]
        searcher = Searcher(root := dataset or default_dataset(), dataset_space(root, model), targets)
        console.warn_unsearchable(searcher)
        if queries or vectors:
            printer = console.print_lines if queries or as_json else console.print_tables
            failed = printer(search_batch(searcher, batch, k, dedup_threshold if dedup else None))
        else:
            hits = searcher.search(batch[0], k, dedup=dedup_threshold if dedup else None)
            (console.print_json if as_json else console.print_results)(hits)
    if failed:
        typer.echo(f"{failed} of {len(batch)} queries failed (their lines say why)", err=True)
        raise typer.Exit(1)


@app.command(name="eval")
def evaluate(
    dataset: Annotated[str, typer.Argument(help="A dataset with embeddings.", show_default=False)],
    model: Model = "offline",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Recall@1/5/10 and median rank of the dataset's own pairs (caption -> image, image -> caption, ...),
    where every item sharing the query's caption counts as correct; with exact search and the built index."""
    from mmindex.dataset.embeddings import EmbeddingStore, dataset_space
    from mmindex.evaluate import evaluate as run
    from mmindex.index.store import not_embedded

    console.setup_logging()
    with console.errors():
        store = EmbeddingStore.of(dataset, dataset_space(dataset, model))
        rows, missing = run(store), not_embedded(store)
        if missing and not rows:
            raise FileNotFoundError(f"nothing to evaluate: {missing}")
        console.warn(missing, *(skipped.advice() for skipped in store.wholly_skipped()))
    (console.print_json if as_json else console.print_eval)(rows)


@app.command(name="check")
def check_dataset(dataset: Annotated[str, typer.Argument(help="A dataset.", show_default=False)],
                  repair: Annotated[bool, typer.Option(help="Rebuild what can be rebuilt; record what is not.")]
                  = False) -> None:
    """Read every committed file against its recorded size and sha256; name each one that is damaged with what
    repairs it (exit status 1). --repair rebuilds shards from their sources, embeddings and indexes."""
    from mmindex.check.run import CheckSettings, check

    console.setup_logging()
    with console.errors():
        report = check(CheckSettings(dataset, repair))
    console.print_dataset_check(report)
    raise typer.Exit(1 if report.damaged else 0)


@app.command()
def serve(
    dataset: Annotated[list[str] | None, typer.Option("--dataset", "-d", help="A dataset to serve, as PATH or NAME="
                                                      f"PATH; repeat for several ({DEFAULT_DATASET_HELP}).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; other than localhost needs --token or --open.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    token: Annotated[str | None, typer.Option(envvar="MMINDEX_TOKEN", help="Require 'Authorization: Bearer "
                                              "TOKEN' (browsers: open /?token=TOKEN once).")] = None,
    open_: Annotated[bool, typer.Option("--open", help="Serve a non-local address to anyone, without a token.")]
    = False,
    max_upload: Annotated[str, typer.Option(help="Largest request body (a size).")] = "20MiB",
    timeout: Annotated[float, typer.Option(help="Seconds a request may take before it is answered 503.")] = 30.0,
    per_client: Annotated[int, typer.Option(help="Connections one address may hold (raise it behind a proxy).")] = 32,
    cors: Annotated[list[str] | None, typer.Option(help="A web page's origin allowed to call the API (clip "
                                                   "front elsewhere, say); repeat for several.")] = None,
) -> None:
    """Serve datasets over HTTP: a web page at /, a JSON API (/docs), clip-retrieval's /knn-service."""
    from mmindex.serve.run import serve as run
    from mmindex.serve.settings import ServeSettings, read_limits

    console.setup_logging()
    with console.errors():
        limits = read_limits(max_upload, timeout, per_client)
        run(ServeSettings(tuple(dataset or [default_dataset()]), host, port, token, open_, limits,
                          cors_origins=tuple(cors or ())))


app.command(context_settings=EXTRA_ARGS)(dedup)
app.command(context_settings=EXTRA_ARGS)(index)


@app.command()
def demo(out: Annotated[Path, typer.Option("--out", "-o", help="Where to build the demo dataset.")]
         = Path("mmindex-demo")) -> None:
    """Run the whole job on the built-in demo corpus (photos, clipart, animal sounds, speech, texts)."""
    from mmindex.demo.run import run_demo

    console.setup_logging()
    with console.errors():
        run_demo(out)


def parse(command: str, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """argv read as `mmindex COMMAND` reads it: its options and the arguments left over (the pipelines' own
    ``run(argv)`` read theirs so, and every option is declared once)."""
    context = typer.main.get_command(app).commands[command].make_context(command, list(argv))  # type: ignore
    return context.params, context.args


def main() -> None:
    console.setup_logging()
    app(prog_name="mmindex")
