"""The ``mmindex`` command: ingest a corpus into a dataset (embed, index and search build on it)."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from mmindex.ingest.plan import DEFAULT_SHARD_SIZE
from mmindex.media import Limits

app = typer.Typer(
    help="Make a multimodal corpus (images, audio, text) searchable across modalities.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
log = logging.getLogger("mmindex")


def _print_version(value: bool) -> None:
    if value:
        from mmindex import __version__

        typer.echo(f"mmindex {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", help="Print mmindex's version and exit.",
                                          callback=_print_version, is_eager=True)] = False,
) -> None:
    """Make a multimodal corpus (images, audio, text) searchable across modalities."""


SOURCES_HELP = (
    "Folders (files sharing a stem form one sample: cat.jpg + cat.txt + cat.json), manifests "
    "(.csv .tsv .jsonl .parquet) and webdataset tars (.tar, .tar.gz, or a glob such as 'shards/*.tar'). "
    "Paths may be on any file system Beam has installed (gs://, s3://, ...). "
    "Arguments of the form --name=value are passed to Apache Beam (e.g. --runner=FlinkRunner)."
)


def setup_logging(verbose: bool = False) -> None:
    """mmindex's own progress on stderr; Beam's chatter only with --verbose. Called before Beam is imported,
    so that its import-time warnings stay quiet too."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    logging.getLogger().setLevel(logging.INFO if verbose else logging.ERROR)
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (it may be replaced after setup)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def split_beam_args(arguments: list[str]) -> tuple[list[str], list[str]]:
    """Separates Beam pipeline options (``--name=value`` or ``--flag``) from source paths."""
    beam_args = [a for a in arguments if a.startswith("--")]
    return [a for a in arguments if not a.startswith("--")], beam_args


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"


def print_ingest_summary(report: Any, dataset: str) -> None:
    c, seconds = report.counts, report.seconds
    if c.found == 0:
        typer.echo("No inputs found: nothing to ingest.")
        return
    rate = c.ingested / seconds if seconds else 0.0
    if not report.changed:
        typer.echo(f"Nothing to do: all {c.found:,} inputs were already ingested or rejected "
                   f"({c.already_present:,} of them match samples already in {dataset}).")
        return
    typer.echo(f"Ingested {c.ingested:,} samples into {len(report.shards_added)} new shard(s) "
               f"({human_bytes(c.bytes_written)}) in {seconds:.1f} s: {rate:,.1f} samples/s, "
               f"{human_bytes(c.bytes_written / seconds if seconds else 0)}/s")
    typer.echo(f"  found {c.found:,} = ingested {c.ingested:,} + rejected {c.rejected:,} "
               f"+ duplicates {c.duplicates:,} ({c.duplicates_in_run:,} within this run, "
               f"{c.already_present:,} already in the dataset)")
    for reason, count in c.rejected_by_reason.items():
        typer.echo(f"  rejected {count:>7,}  {reason}")
    if report.rejects_file:
        typer.echo(f"  reasons per input: {report.rejects_file}")


def run_ingest(sources: list[str], out: str, pipeline_args: list[str]) -> Any:
    from mmindex.ingest.run import ingest as run
    from pipelines.ingest.pipeline import BeamExecutor, parse_args

    argv = [f"--source={s}" for s in sources] + [f"--dataset={out}", *pipeline_args]
    settings, beam_args = parse_args(argv)
    report = run(settings, BeamExecutor(beam_args) if beam_args else None)
    print_ingest_summary(report, out)
    return report


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ingest(
    sources: Annotated[list[str], typer.Argument(help=SOURCES_HELP, show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset folder to create, or to add new samples to.")],
    shard_size: Annotated[str, typer.Option(help="Samples and/or bytes per shard: 10000, 512MB or 10000,1GB.")]
    = DEFAULT_SHARD_SIZE,
    workers: Annotated[int, typer.Option(help="Processes on this machine (with the default in-process runner).")]
    = 1,
    max_file_bytes: Annotated[int, typer.Option(help="Refuse files larger than this.")] = Limits.max_file_bytes,
    max_image_pixels: Annotated[int, typer.Option(help="Refuse images declaring more pixels (decompression bombs).")]
    = Limits.max_image_pixels,
    max_text_bytes: Annotated[int, typer.Option(help="Refuse captions and texts longer than this.")]
    = Limits.max_text_bytes,
    max_audio_seconds: Annotated[float, typer.Option(help="Refuse audio clips longer than this.")]
    = Limits.max_audio_seconds,
    image_column: Annotated[str | None, typer.Option(help="Manifest column holding image paths.")] = None,
    audio_column: Annotated[str | None, typer.Option(help="Manifest column holding audio paths.")] = None,
    caption_column: Annotated[str | None, typer.Option(help="Manifest column holding captions or texts.")] = None,
    profile: Annotated[str | None, typer.Option(
        help="Runner profile: flink, spark, dataflow, portable (configs/runners/) or a YAML file of Beam options."
    )] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Beam's own log.")] = False,
) -> None:
    """Validate and shard a raw corpus into DATASET: webdataset tars plus samples and rejects tables (parquet).

    Bad or hostile inputs never stop the run: each lands in the rejects parquet with a reason. Running
    the same ingest again does nothing; new inputs go into new shards, finished shards are never touched.
    """
    setup_logging(verbose)
    paths, beam_args = split_beam_args(sources)
    if not paths:
        raise typer.BadParameter("give at least one folder, manifest or tar to ingest", param_hint="SOURCES")
    options = [f"--shard-size={shard_size}", f"--workers={workers}", f"--max-file-bytes={max_file_bytes}",
               f"--max-image-pixels={max_image_pixels}", f"--max-text-bytes={max_text_bytes}",
               f"--max-audio-seconds={max_audio_seconds}"]
    options += [f"--{name}-column={value}" for name, value in
                (("image", image_column), ("audio", audio_column), ("caption", caption_column)) if value]
    from mmindex.dataset import DatasetBusy
    from pipelines.options import profile_args

    try:
        run_ingest(paths, out, options + (profile_args(profile) if profile else []) + beam_args)
    except (FileNotFoundError, ValueError, DatasetBusy) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(2) from None


def print_embed_summary(result: dict[str, Any], model: str) -> None:
    if not result["pending"]:
        typer.echo(f"Nothing to do: all {result['shards']:,} shard(s) already have embeddings in space "
                   f"{result['space']!r} ({result['root']}).")
        return
    stats, report = result["stats"], result["report"]
    typer.echo(f"Embedded {stats['shards']:,} of {result['pending']:,} pending shard(s) into space "
               f"{result['space']!r} in {stats['wall_seconds']:.1f} s -> {result['root']}")
    for modality, figures in stats["modalities"].items():
        rate = figures["per_worker_items_per_s"]
        per_worker = f"  ({rate:,.1f}/s per worker)" if rate else ""
        typer.echo(f"  {modality:<6}{figures['embedded']:>9,} embedded{per_worker}")
    for row in stats["skipped"]:
        typer.echo(f"  {row['modality']:<6}{row['items']:>9,} skipped: {row['reason']}")
    for failure in report.failures:
        typer.echo(f"  failed: {failure}", err=True)
    if report.failures:
        typer.echo("  Shards that failed are not committed: run the same command again to finish them.", err=True)


def run_embed(dataset: str, model: str, gpus: int | None = None, device: str = "cpu", workers: int = 1,
              batch_size: int = 64, decode_workers: int | None = None, threads: int | None = None) -> dict[str, Any]:
    from mmindex.embed.run import embed_dataset
    from mmindex.embed.workers import WorkerSettings, devices
    from mmindex.spaces import resolve_space

    chosen = devices(gpus, device, workers)
    if decode_workers is None:  # on CPU the model needs the cores; a GPU worker gets its share of them
        decode_workers = 1 if chosen[0] == "cpu" else max(1, min(8, (os.cpu_count() or 2) // len(chosen) - 1))
    result = embed_dataset(dataset, resolve_space(model), WorkerSettings(chosen, batch_size, decode_workers, threads))
    print_embed_summary(result, model)
    return result


def run_beam_embed(dataset: str, model: str, device: str, workers: int, batch_size: int,
                   beam_args: list[str]) -> None:
    from pipelines.embed.pipeline import run

    started = time.monotonic()
    result = run([f"--dataset={dataset}", f"--model={model}", f"--device={device}", f"--workers={workers}",
                  f"--batch-size={batch_size}", *beam_args])
    if not result["pending"]:
        typer.echo(f"Nothing to do: all {result['shards']:,} shard(s) already have embeddings in space "
                   f"{result['space']!r} ({result['root']}).")
        return
    typer.echo(f"Embedded {result['pending']:,} shard(s) into space {result['space']!r} with Beam in "
               f"{time.monotonic() - started:.1f} s -> {result['root']} (per-item reasons in its parquet files)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def embed(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="A dataset made by `mmindex ingest`.", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help=(
        "Model space: a preset (offline, clip, siglip, clap: see configs/spaces/), a space YAML file, or a "
        "Hugging Face id / local folder of a CLIP, SigLIP or CLAP model."))] = "offline",
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
             "for any --workers at the same --threads; other thread counts may change a float16 value's last bit."
    )] = None,
    profile: Annotated[str | None, typer.Option(
        help="Run the Beam pipeline with a runner profile: flink, spark, dataflow, portable, or a YAML file."
    )] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show the libraries' own log.")] = False,
) -> None:
    """Embed every sample's image, audio and text into one vector space, under DATASET/embeddings/<space>/.

    Finished shards are committed one by one: a killed run resumes where it stopped, and a repeat does
    nothing. Media a model cannot read, and audio with no speech for the offline space, are skipped with a
    reason listed per item and counted in the summary. Arguments of the form --name=value (such as
    --runner=FlinkRunner) or --profile run the same encoders in a Beam RunInference pipeline instead of the
    local worker pool.
    """
    setup_logging(verbose)
    beam_args = [a for a in ctx.args if a.startswith("--")]
    if len(beam_args) != len(ctx.args):
        raise typer.BadParameter(f"unexpected arguments: {' '.join(a for a in ctx.args if a not in beam_args)}")
    from mmindex.dataset import DatasetBusy
    from mmindex.embed.store import SpaceMismatch
    from mmindex.encoders.huggingface import ModelUnavailable
    from pipelines.options import profile_args

    try:
        if beam_args or profile:
            run_beam_embed(dataset, model, device, workers, batch_size,
                           (profile_args(profile) if profile else []) + beam_args)
            return
        result = run_embed(dataset, model, gpus, device, workers, batch_size, decode_workers, threads)
    except (FileNotFoundError, ValueError, RuntimeError, DatasetBusy, SpaceMismatch, ModelUnavailable,
            ModuleNotFoundError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(2) from None
    if result.get("report") and result["report"].failures:
        raise typer.Exit(1)


def parse_bytes(text: str) -> int:
    """'4GB', '512MB', '1.5GiB' or a number of bytes."""
    import re

    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
             "GIB": 2**30, "TIB": 2**40}
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]?I?B?)", text.strip().upper())
    if not match or match[2] not in units or float(match[1]) <= 0:
        raise typer.BadParameter(f"{text!r}: give bytes such as 4GB, 512MB or 2GiB")
    return int(float(match[1]) * units[match[2]])


def search_settings(info: dict[str, Any]) -> str:
    """How an index is searched, as `mmindex index` prints it: 'exact', 'nprobe=8, re-rank 4x' ..."""
    parts = [f"{k}={v}" for k, v in info["parameters"].items()]
    if info.get("rerank"):
        parts.append(f"re-rank {info['rerank']}x")
    return ", ".join(parts) or "exact"


def run_index(dataset: str, model: str, max_memory: str = "4GB", target_recall: float = 0.95,
              index_type: str | None = None, update: bool = False) -> list[dict[str, Any]]:
    from mmindex.embed.store import EmbeddingStore
    from mmindex.index.build import IndexSettings, build_index
    from mmindex.index.store import IndexFiles
    from mmindex.index.vectors import counts
    from mmindex.spaces import resolve_space

    store = EmbeddingStore.of(dataset, resolve_space(model))
    settings = IndexSettings(parse_bytes(max_memory), target_recall, index_type)
    _warn_not_embedded(store)
    infos = []
    with store.dataset.exclusive("index"):
        for modality in store.space.modalities():
            files = IndexFiles(store, modality)
            embedded = counts(store, modality)
            if not embedded:
                continue
            built = files.info() if update and files.exists() else None
            if built is not None and built["shards"] == embedded:
                infos.append(built)
                typer.echo(f"{modality:<6} {built['vectors']:>10,} vectors  up to date  -> {files.root}")
                continue
            info = build_index(files, settings, update=update)
            infos.append(info)
            typer.echo(f"{modality:<6} {info['vectors']:>10,} vectors  {info['type']:<18} {search_settings(info):<22} "
                       f"recall@10 {info['recall_at_10']:.3f}  {human_bytes(info['bytes'])}  "
                       f"{info['build_seconds']:.1f} s  -> {files.root}")
            if not info["target_met"]:
                typer.echo(f"Warning: the {modality} index reaches recall@10 {info['recall_at_10']:.3f}, below the "
                           f"target {target_recall}, even searched as deep as it goes: raise --max-memory (larger "
                           f"codes) or choose another --index-type", err=True)
    if not infos:
        raise FileNotFoundError(f"no vectors in space {store.space.name!r}: run `mmindex embed {dataset} "
                                f"--model {model}` first")
    return infos


MODEL_HELP = ("Model space: a preset (offline, clip, siglip, clap: see configs/spaces/), a space YAML file, or a "
              "Hugging Face id / local folder of a CLIP, SigLIP or CLAP model.")
DEFAULT_DATASET = os.environ.get("MMINDEX_DATASET", "mmindex-demo/dataset")


def _fail(err: Exception, code: int = 2) -> typer.Exit:
    typer.echo(f"Error: {err}", err=True)
    return typer.Exit(code)


def _usage_errors() -> tuple[type[Exception], ...]:
    from mmindex.dataset import DatasetBusy
    from mmindex.embed.store import SpaceMismatch
    from mmindex.encoders.huggingface import ModelUnavailable
    from mmindex.index.store import IndexStale

    return (FileNotFoundError, ValueError, RuntimeError, MemoryError, DatasetBusy, SpaceMismatch, ModelUnavailable,
            ModuleNotFoundError, IndexStale)


def check_indexes(dataset: str, model: str) -> None:
    from mmindex.embed.store import EmbeddingStore
    from mmindex.index.store import IndexFiles, IndexStale, not_embedded
    from mmindex.spaces import resolve_space

    store = EmbeddingStore.of(dataset, resolve_space(model))
    built = [files for files in (IndexFiles(store, m) for m in store.space.modalities()) if files.exists()]
    if not built:
        raise FileNotFoundError(f"no index built for space {store.space.name!r}: run `mmindex index {dataset}`")
    for files in built:
        files.check(keys=True)
        typer.echo(f"{files.modality:<6} ok: {files.info()['vectors']:,} vectors agree with the embeddings and samples")
    problem = not_embedded(store)
    if problem:
        raise IndexStale(problem)


def _warn_not_embedded(store: Any) -> None:
    from mmindex.index.store import not_embedded

    problem = not_embedded(store)
    if problem:
        typer.echo(f"Warning: {problem}", err=True)


@app.command()
def index(
    dataset: Annotated[str, typer.Argument(help="A dataset with embeddings (`mmindex embed`).", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)] = "offline",
    max_memory: Annotated[str, typer.Option(help="Memory the index may use (per modality): 4GB, 512MB ...")]
    = "4GB",
    target_recall: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="recall@10 against exact search to tune for (1: exact search).")] = 0.95,
    index_type: Annotated[str | None, typer.Option(
        help="A FAISS factory string (e.g. 'IVF4096,PQ32', 'HNSW32,Flat') instead of the automatic choice.")]
    = None,
    update: Annotated[bool, typer.Option(help="Add newly embedded shards without retraining (then tune again).")]
    = False,
    check: Annotated[bool, typer.Option(
        help="Build nothing: check every index, id by id, against the embeddings and the samples.")] = False,
) -> None:
    """Build one FAISS index per modality of a space, under DATASET/indexes/<space>/<modality>/.

    Exact search while the dataset is small, then IVF (Flat, SQ8 or PQ) as it grows and the memory budget
    requires. Compressed codes are re-ranked with the exact vectors of the embeddings (on disk). nprobe (or
    efSearch) and the re-rank depth are tuned on held-out queries of every modality until recall@10 against
    exact search meets the target; the measured recall is recorded with the index.
    """
    try:
        if check:
            check_indexes(dataset, model)
        else:
            run_index(dataset, model, max_memory, target_recall, index_type, update)
    except _usage_errors() as err:
        raise _fail(err) from None


def _read_queries(path: Path, weights: dict[str, float]) -> list[Any]:
    """The queries of a --queries file; a malformed line refuses the file, naming the line."""
    import json

    from mmindex.search import BadQuery, Query

    queries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            if not line.lstrip().startswith("{"):
                queries.append(Query(text=line.strip(), weights=weights))
                continue
            fields = json.loads(line)
            unknown = set(fields) - {"text", "image", "audio", "weights"}
            if unknown:
                raise BadQuery(f"unknown field(s) {sorted(unknown)}; use text, image, audio, weights")
            own_weights = fields.get("weights", {})
            if not isinstance(own_weights, dict):
                raise BadQuery(f"weights must map modalities to numbers, not {own_weights!r}")
            queries.append(Query(fields.get("text"), fields.get("image"), fields.get("audio"),
                                 {**weights, **own_weights}))
        except ValueError as err:  # BadQuery, or JSON that does not parse
            raise BadQuery(f"{path}:{number}: {err}") from None
    return queries


def _print_results(results: list[dict[str, Any]]) -> None:
    if not results:
        typer.echo("No results.")
        return
    typer.echo(f"{'rank':>4}  {'score':>6}  {'modality':<8}  {'caption':<50}  source")
    for hit in results:
        caption = " ".join((hit.get("caption") or "").split())
        caption = caption if len(caption) <= 50 else caption[:49] + "…"
        typer.echo(f"{hit['rank']:>4}  {hit['score']:>6.3f}  {hit['modality']:<8}  {caption:<50}  {hit.get('source')}")


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="Text to search for.", show_default=False)] = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to search ($MMINDEX_DATASET).")]
    = DEFAULT_DATASET,
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)] = "offline",
    image: Annotated[str | None, typer.Option(help="An image file as (part of) the query.")] = None,
    audio: Annotated[str | None, typer.Option(help="An audio file as (part of) the query.")] = None,
    modality: Annotated[str, typer.Option(help="What to return: image, audio, text or all.")] = "all",
    k: Annotated[int, typer.Option("-k", help="Number of results.")] = 10,
    weight: Annotated[list[str] | None, typer.Option(
        help="Weight of a query part when several are fused, e.g. --weight image=0.3 (default 1 each).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    queries: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False,
        help="A file of queries, one per line: plain text, or JSON {text, image, audio, weights}. Writes JSONL: "
             "each line the query and its results, or the error that stopped it (exit status 1 if any).")]
    = None,
) -> None:
    """Find the images, sounds and texts nearest to a text, an image or a clip (or several, fused)."""
    import json

    from mmindex.search import BadQuery, Query, Searcher
    from mmindex.spaces import resolve_space

    if modality not in ("image", "audio", "text", "all"):
        raise typer.BadParameter("choose image, audio, text or all", param_hint="--modality")
    if k < 1:
        raise typer.BadParameter("must be at least 1", param_hint="-k")
    weights = {}
    for item in weight or []:
        name, _, value = item.partition("=")
        try:
            weights[name] = float(value)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: give MODALITY=NUMBER, e.g. image=0.5", param_hint="--weight") from None
        if name not in ("text", "image", "audio"):
            raise typer.BadParameter(f"{item!r}: the modality is text, image or audio", param_hint="--weight")
    failed = 0
    try:
        batch = _read_queries(queries, weights) if queries else [Query(query, image, audio, weights)]
        if not queries:
            batch[0].parts()  # an empty query is refused before anything loads
        searcher = Searcher(dataset, resolve_space(model), None if modality == "all" else [modality])
        _warn_not_embedded(searcher.store)
        if queries:
            failed = _search_batch(searcher, batch, k)
        elif as_json:
            typer.echo(json.dumps(searcher.search(batch[0], k), indent=2, ensure_ascii=False))
        else:
            _print_results(searcher.search(batch[0], k))
    except (BadQuery, *_usage_errors()) as err:
        raise _fail(err) from None
    if failed:
        typer.echo(f"{failed} of {len(batch)} queries failed (their lines say why)", err=True)
        raise typer.Exit(1)


def _search_batch(searcher: Any, batch: list[Any], k: int) -> int:
    """One JSON line per query, in order: its results, or the error that stopped it. Returns the errors."""
    import json

    from mmindex.search import BadQuery

    failed = 0
    for one in batch:
        line: dict[str, Any] = {"query": {"text": one.text, "image": one.image, "audio": one.audio}}
        try:
            line["results"] = searcher.search(one, k)
        except BadQuery as err:
            line["error"], failed = str(err), failed + 1
        typer.echo(json.dumps(line, ensure_ascii=False))
    return failed


@app.command(name="eval")
def evaluate(
    dataset: Annotated[str, typer.Argument(help="A dataset with embeddings.", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)] = "offline",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Recall@1/5/10 and median rank of the dataset's own pairs (caption -> image, image -> caption, ...),
    where every item sharing the query's caption counts as correct; with exact search and the built index."""
    import json

    from mmindex.embed.store import EmbeddingStore
    from mmindex.evaluate import evaluate as run_eval
    from mmindex.spaces import resolve_space

    try:
        rows = run_eval(EmbeddingStore.of(dataset, resolve_space(model)))
    except _usage_errors() as err:
        raise _fail(err) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("No pairs to evaluate: no sample has a caption and a vector in two modalities.")
        return
    typer.echo(f"{'query -> target':<20}{'search':<22}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'median':>8}{'queries':>9}")
    for row in rows:
        for kind in ("exact", "index"):
            if kind in row:
                m = row[kind]
                label = "exact" if kind == "exact" else f"index {row['index_type']}"
                median = f"{m['median_rank']:.0f}" if m["median_rank"] is not None else "-"
                typer.echo(f"{row['query'] + ' -> ' + row['target']:<20}{label:<22}{m['recall@1']:>7.3f}"
                           f"{m['recall@5']:>7.3f}{m['recall@10']:>7.3f}{median:>8}{m['queries']:>9}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to build the demo dataset.")]
    = Path("mmindex-demo"),
) -> None:
    """Run the whole job on the built-in demo corpus (photos, clipart, animal sounds, speech, texts)."""
    setup_logging()
    from mmindex.dataset import Dataset, read_parquet
    from mmindex.demo import CORPUS

    dataset = out / "dataset"
    typer.echo(f"== mmindex ingest {CORPUS} --out {dataset}")
    run_ingest([str(CORPUS)], str(dataset), [])
    metadata = Dataset(str(dataset)).read_metadata()
    counts = metadata["counts"]
    typer.echo(f"\nDataset {dataset}: {counts['samples']:,} samples in {len(metadata['shards'])} shard(s); "
               + ", ".join(f"{n} with {m}" for m, n in counts["modalities"].items()))
    rows = read_parquet(str(dataset / "samples" / f"{metadata['shards'][0]['name']}.parquet")).to_pylist()
    typer.echo(f"{'key':<22}{'modalities':<16}caption")
    for row in sorted(rows, key=lambda r: r["source"])[::max(1, len(rows) // 8)]:
        caption = (row["caption"] or "").strip().replace("\n", " ")
        typer.echo(f"{row['key']:<22}{'+'.join(row['modalities']):<16}{caption[:60]}")
    typer.echo(f"\n== mmindex embed {dataset} --model offline")
    run_embed(str(dataset), "offline")
    typer.echo(f"\n== mmindex index {dataset}")
    run_index(str(dataset), "offline")
    from mmindex.search import Query, Searcher
    from mmindex.spaces import resolve_space

    searcher = Searcher(str(dataset), resolve_space("offline"))
    for text in ("a photo of a cat", "the conference is locked"):
        typer.echo(f"\n== mmindex search {text!r} --dataset {dataset} -k 5")
        _print_results(searcher.search(Query(text=text), k=5))


def main() -> None:
    setup_logging()
    app(prog_name="mmindex")
