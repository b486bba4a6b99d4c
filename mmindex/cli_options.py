"""What `mmindex` commands share: option types and help, and options read into a stage's typed settings.

``python -m pipelines.<stage>`` reads its argv with the same options (mmindex.cli.parse), so each is declared
once.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mmindex.media import Limits
from mmindex.presets import profile_args

if TYPE_CHECKING:
    from pathlib import Path

    from mmindex.embed.run import EmbedSettings
    from mmindex.index.run import IndexSettings
    from mmindex.ingest.run import IngestSettings
    from mmindex.search import Query

EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
DEFAULT_DATASET_HELP = "default: $MMINDEX_DATASET, else the dataset `mmindex demo` built last"
MODEL_HELP = ("Model space: a shipped preset (offline, clip, siglip, clap, clip+clap), a space YAML "
              "file, or a Hugging Face id / local folder of a CLIP, SigLIP or CLAP model.")
PROFILE_HELP = ("Run on Beam with a shipped runner profile (flink, spark, dataflow, dask, portable) or a "
                "YAML file of Beam options.")
SOURCES_HELP = ("Folders (files sharing a stem form one sample: cat.jpg + cat.txt + cat.json), manifests "
                "(.csv .tsv .jsonl .parquet) and webdataset tars (.tar, .tar.gz, or a glob such as 'shards/*.tar'). "
                "Paths may be on any file system Beam has installed (gs://, s3://, ...). Arguments of the form "
                "--name=value are Apache Beam options and run the job on Beam (e.g. --runner=FlinkRunner).")
Model = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
Profile = Annotated[str | None, typer.Option(help=PROFILE_HELP)]
Dedup = Annotated[bool, typer.Option(
    "--dedup", help="No two results are copies: of a group `mmindex dedup` found, only the best hit; where the "
                    "modality was not grouped, hits at least --dedup-threshold alike count as one.")]
DedupThreshold = Annotated[float, typer.Option(min=0.0, max=1.0, help="Cosine in the model space from which "
                                               "two hits are one with --dedup (clip-retrieval's 0.94).")]
ExcludeDuplicates = Annotated[bool, typer.Option(
    help="Leave out the near-duplicates `mmindex dedup` grouped (of each group, all but its representative); "
         "--update keeps them out. A later dedup run that changes them makes the index stale.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show the libraries' own log.")]
Decode = Annotated[str, typer.Option(
    help="Where images are decoded: device (JPEGs on the model's device, nvJPEG on a GPU; decode processes only "
         "read bytes), cpu (in the decode processes), or auto: device on a GPU where torchvision imports, else "
         "cpu. See docs/gpu.md.")]


def _version(value: bool) -> None:
    if value:
        from mmindex import __version__

        typer.echo(f"mmindex {__version__}")
        raise typer.Exit()


Version = Annotated[bool, typer.Option("--version", help="Print mmindex's version and exit.", callback=_version,
                                       is_eager=True)]


def ingest_settings(options: dict[str, Any]) -> tuple[IngestSettings, list[str]]:
    """`mmindex ingest`'s options as settings, and the Beam options (which run the job on Beam)."""
    from mmindex.ingest.discover import ManifestColumns
    from mmindex.ingest.run import IngestSettings
    from mmindex.sizes import parse_size
    paths, beam_args = split_options(options["sources"], options["profile"])
    limits = Limits(parse_size(options["max_file_bytes"]), options["max_image_pixels"],
                    parse_size(options["max_text_bytes"]), options["max_audio_seconds"])
    columns = ManifestColumns.choose(options["image_column"], options["audio_column"], options["caption_column"])
    return IngestSettings(tuple(paths), options["out"], options["shard_size"], options["workers"], limits,
                          columns), beam_args


def embed_settings(options: dict[str, Any], extra: list[str]) -> tuple[EmbedSettings, list[str]]:
    """`mmindex embed`'s options as settings, and the Beam options (which run the encoders on Beam)."""
    from mmindex.embed.run import EmbedSettings
    unexpected, beam_args = split_options(extra, options["profile"])
    if unexpected:
        raise typer.BadParameter(f"unexpected arguments: {' '.join(unexpected)}")
    names = ("dataset", "model", "gpus", "device", "workers", "batch_size", "decode_workers", "threads", "decode")
    return EmbedSettings(*(options[name] for name in names)), beam_args


def index_settings(options: dict[str, Any], extra: list[str]) -> tuple[IndexSettings, list[str]]:
    """`mmindex index`'s options as settings, and the Beam options (which build it on Beam)."""
    from mmindex.index.run import IndexSettings
    from mmindex.index.settings import BuildSettings
    from mmindex.sizes import parse_size
    unexpected, beam_args = split_options(extra, options["profile"])
    if unexpected:
        raise typer.BadParameter(f"unexpected arguments: {' '.join(unexpected)}")
    build = BuildSettings(parse_size(options["max_memory"]), options["target_recall"], options["index_type"],
                          options["exclude_duplicates"])
    return IndexSettings(options["dataset"], options["model"], build, options["update"]), beam_args


def on_beam(beam_args: list[str], workers: int) -> Any:
    """The Beam executor when Beam options were given (None: the stage's in-process executor)."""
    if not beam_args:
        return None
    import importlib

    return importlib.import_module("pipelines.executor").BeamExecutor(beam_args, workers)


def split_options(arguments: list[str], profile: str | None) -> tuple[list[str], list[str]]:
    """Plain arguments, and the Beam options: a runner profile's, then those given as --name=value."""
    options = [a for a in arguments if a.startswith("--")]
    return [a for a in arguments if not a.startswith("--")], (profile_args(profile) if profile else []) + options


def default_dataset() -> str:
    """The dataset of `mmindex search` and `serve` when none is given: $MMINDEX_DATASET, else the one `mmindex
    demo` built last, remembered in the user's data folder so that it is found from any folder."""
    from mmindex.demo import remembered_dataset

    dataset = os.environ.get("MMINDEX_DATASET") or remembered_dataset()
    if not dataset:
        raise FileNotFoundError("no dataset given: pass --dataset PATH (or set $MMINDEX_DATASET), or run `mmindex "
                                "demo`, which builds the demo dataset and makes it the default")
    return dataset


def search_queries(text: str | None, image: str | None, audio: str | None, weights: list[str],
                   queries: Path | None, vectors: Path | None = None) -> list[Query]:
    """`mmindex search`'s queries: a --queries or --vectors file's, or the one its arguments give, which is
    refused before anything loads if it is empty (in the CLI's terms: its options)."""
    from mmindex.search import BadQuery, EmptyQuery, Query, parse_weights, read_queries, read_query_vectors

    parsed = parse_weights(weights)
    if vectors and (queries or text or image or audio):
        raise BadQuery("--vectors searches by the file's vectors alone: give no text, --image, --audio or --queries")
    if vectors:
        return read_query_vectors(vectors)
    if queries:
        return read_queries(queries, parsed)
    query = Query(text, image, audio, parsed)
    try:
        query.parts()
    except EmptyQuery:
        raise EmptyQuery("empty query: give a text, --image PATH or --audio PATH") from None
    return [query]
