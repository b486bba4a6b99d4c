"""What the commands print: each stage's typed report as a person reads it, and progress on stderr."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import typer

from mmindex.sizes import counted, format_size

if TYPE_CHECKING:
    from mmindex.check.indexes import IndexCheck
    from mmindex.check.run import CheckReport
    from mmindex.dedup.run import DedupReport
    from mmindex.embed.run import EmbedReport
    from mmindex.importer.run import ImportReport
    from mmindex.index.run import IndexReport
    from mmindex.ingest.run import IngestReport
    from mmindex.search import Searcher

log = logging.getLogger("mmindex")


MACHINE_TROUBLE = {
    errno.ENOSPC: "no space left on the disk holding {path}: free some space and run the same command again "
                  "(what was committed is kept, nothing half-written is)",
    errno.EDQUOT: "disk quota exceeded writing {path}: free some space and run the same command again "
                  "(what was committed is kept, nothing half-written is)",
    errno.EROFS: "{path} is on a read-only file system: write the dataset to another folder",
    errno.EIO: "input/output error on {path}: the disk may be failing; check it, then run the same command again",
}


def setup_logging(verbose: bool = False) -> None:
    """mmindex's own progress on stderr; the libraries' chatter (Beam's) only with --verbose. Called before
    Beam is imported, so that its import-time warnings stay quiet too."""
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


@contextlib.contextmanager
def errors() -> Iterator[None]:
    """The one error path of every command: a failure the user can act on (a missing file, a bad value, a busy
    dataset, a model that is not there) is one line that says what to do, and exit status 2."""
    try:
        yield
    except typer.Exit:  # a RuntimeError, but a deliberate exit status
        raise
    except OSError as err:
        if err.errno in MACHINE_TROUBLE:  # not the command's fault: exit status 1, and what to do
            typer.echo(f"Error: {MACHINE_TROUBLE[err.errno].format(path=err.filename or 'a file')}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(2) from None
    except (ValueError, RuntimeError, MemoryError) as err:
        typer.echo(f"Error: {err}", err=True)
        raise typer.Exit(2) from None


def warn(*messages: str | None) -> None:
    for message in messages:
        if message:
            typer.echo(f"Warning: {message}", err=True)


def warn_unsearchable(searcher: Searcher) -> None:
    """What a search cannot find, and why: shards not embedded yet, damaged indexes (the other modalities are
    searched), modalities of which the space skipped every item."""
    warn(searcher.not_embedded(), *searcher.damaged.values(), *(s.advice() for s in searcher.skipped.values()))


def print_ingest(report: IngestReport, dataset: str) -> None:
    c, seconds = report.counts, report.seconds
    if c.found == 0:
        typer.echo("No inputs found: nothing to ingest.")
        return
    if not report.changed:
        typer.echo(f"Nothing to do: {counted(c.found, 'input')} found, every one already ingested or rejected "
                   f"({c.already_present:,} matching samples already in {dataset}).")
        return
    per_second = 1 / seconds if seconds else 0.0
    typer.echo(f"Ingested {counted(c.ingested, 'sample')} into {counted(len(report.shards_added), 'new shard')} "
               f"({format_size(c.bytes_written)}) in {seconds:.1f} s: {c.ingested * per_second:,.1f} samples/s, "
               f"{format_size(c.bytes_written * per_second)}/s")
    typer.echo(f"  found {c.found:,} = ingested {c.ingested:,} + rejected {c.rejected:,} "
               f"+ duplicates {c.duplicates:,} ({c.duplicates_in_run:,} within this run, "
               f"{c.already_present:,} already in the dataset)")
    for reason, count in c.rejected_by_reason.items():
        typer.echo(f"  rejected {count:>7,}  {reason}")
    for source, reason, detail in report.rejected_first:
        typer.echo(f"  rejected {source}: {reason} ({detail})")
    if c.rejected > len(report.rejected_first):
        typer.echo(f"  ... and {c.rejected - len(report.rejected_first):,} more")
    if report.rejects_file:
        typer.echo(f"  every rejected input with its reason: {report.rejects_file}")
    for shard in report.small_shards:
        typer.echo(f"  Note: shard {shard.name} holds {counted(shard.samples, 'sample')}: finished shards are never "
                   f"rewritten, so each ingest into an existing dataset starts a new shard. Add files in batches, "
                   f"or ingest all sources again into a new folder for full shards.")


STARVED = 0.5  # a model that waits for its input more than half its time is fed too slowly


def print_embed(report: EmbedReport) -> None:
    if not report.pending:
        typer.echo(f"Nothing to do: every shard ({counted(report.shards, 'shard')}) already has embeddings in "
                   f"space {report.space!r} ({report.root}).")
    else:
        typer.echo(f"Embedded {report.committed:,} of {counted(report.pending, 'pending shard')} into space "
                   f"{report.space!r} in {report.wall_seconds:.1f} s -> {report.root}")
    for modality, items in sorted(report.embedded.items()):
        rate, waiting = report.rate(modality), report.waiting(modality)
        measured = f"  ({rate:,.1f}/s per worker, {waiting:.0%} of it waiting for input)" if rate else ""
        typer.echo(f"  {modality:<6}{items:>9,} embedded{measured}")
    starved = [m for m in sorted(report.embedded) if (report.waiting(m) or 0) > STARVED]
    if starved:
        typer.echo(f"  The model waited for decoded {' and '.join(starved)} most of the time: decoding, not the model, "
                   f"bounds this run. More --decode-workers, or --decode device on a GPU, would feed it faster.")
    for (modality, reason), items in sorted(report.skipped.items()):
        typer.echo(f"  {modality:<6}{items:>9,} skipped: {reason}")
    for skipped in report.wholly_skipped:
        warn(skipped.advice())
    for failure in report.failures:
        typer.echo(f"  failed: {failure}", err=True)
    if report.failures:
        typer.echo("  Shards that failed are not committed: once the lines above are dealt with, run the same command "
                   "again to finish them.", err=True)


def print_import(report: ImportReport) -> None:
    """What an import added, and the commands that search it: a space of vectors only is searched by vector."""
    if not report.imported and not report.failures:
        typer.echo(f"Nothing to do: every file ({counted(report.files, 'file')}) is already imported into space "
                   f"{report.space!r} of {report.root}.")
        return
    if report.imported:
        typer.echo(f"Imported {counted(report.rows, 'vector')} ({report.dim}-d) from "
                   f"{counted(len(report.imported), 'file')} into space {report.space!r} of {report.root}"
                   + (f" ({report.already:,} imported before)" if report.already else ""))
        search = (f"mmindex search --vectors QUERIES.npy -d {report.root} --model {report.space}"
                  if report.vectors_only else f"mmindex search \"TEXT\" -d {report.root} --model {report.space}")
        typer.echo(f"  next: mmindex index {report.root} --model {report.space}, then {search}")
        if report.vectors_only:
            typer.echo(f"  space {report.space!r} has no encoder: it is searched by vector (name a preset such as "
                       f"laion-vit-l-14 with --model for text queries)")
    for failure in report.failures:
        typer.echo(f"Error: {failure}", err=True)


def print_index(report: IndexReport) -> None:
    for built in report.indexes:
        if built.up_to_date:
            typer.echo(f"{built.modality:<6} {built.vectors:>10,} vectors  up to date  -> {built.root}")
            continue
        typer.echo(f"{built.modality:<6} {built.vectors:>10,} vectors  {built.type:<18} {built.search:<22} "
                   f"recall@10 {built.recall_at_10:.3f}  {format_size(built.bytes)}  {built.build_seconds:.1f} s  "
                   f"-> {built.root}")
        if built.excluded:
            typer.echo(f"{'':<6} {built.excluded:>10,} near-duplicates left out (`mmindex dedup`'s groups but their "
                       f"representatives)")
        if not built.target_met:
            warn(f"the {built.modality} index reaches recall@10 {built.recall_at_10:.3f}, below the target "
                 f"{report.target_recall}, even searched as deep as it goes: raise --max-memory (larger codes) or "
                 f"choose another --index-type")
    warn(report.not_embedded)
    for skipped in report.wholly_skipped:
        warn(skipped.advice())


def print_dedup(report: DedupReport) -> None:
    """Per modality: its groups and the samples that could go; then the keep-list, if one was written."""
    typer.echo(f"{counted(report.samples, 'sample')}; {counted(report.described, 'shard')} described by this run")
    for reason, count in sorted(report.skipped.items()):
        warn(f"{counted(count, 'member')} could not be described ({reason}): they are in no group")
    for found in report.modalities:
        typer.echo(f"{found.modality:<6} {counted(found.items, 'item'):>16}  {counted(found.groups, 'group'):>14}  "
                   f"{found.removable:>8,} removable  (threshold {found.threshold}, "
                   f"{counted(found.new_shards, 'shard')} compared anew)")
    typer.echo(f"groups: {report.groups_path}")
    if report.keep_list:
        typer.echo(f"keep-list: {report.kept:,} of {report.samples:,} samples -> {report.keep_list}")


def print_check(check: IndexCheck) -> None:
    for built in check.checked:
        typer.echo(f"{built.modality:<6} ok: {built.vectors:,} vectors agree with the embeddings and samples")


def print_dataset_check(report: CheckReport) -> None:
    """One line per file that is not as recorded, what a repair did and what is still wrong, then a summary."""
    def lines(findings: list, still: str = "") -> None:
        for f in findings:
            typer.echo(f"{still}{'damaged' if f.damaged else 'unrecorded'} {f.path}: {f.problem}; repair: {f.repair}")

    repaired = bool(report.repaired or report.lost)
    lines(report.found)
    for done in report.repaired:
        typer.echo(f"repaired {done}")
    for lost in report.lost:
        typer.echo(f"lost shard {lost.shard} sample {lost.key}: {lost.source} ({lost.why})")
    after = report.remaining if repaired else report.found
    if repaired:
        lines(report.remaining, "still ")
    damaged, unrecorded = sum(f.damaged for f in after), sum(not f.damaged for f in after)
    typer.echo(f"Checked {report.files:,} files ({format_size(report.bytes)}) of {report.root}"
               f"{' and repaired' if repaired else ''}: {f'{damaged} damaged' if damaged else 'all as recorded'}"
               + (f"; {counted(unrecorded, 'file')} with no checksum recorded" if unrecorded else ""))


def print_json(document: Any) -> None:
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False))


def print_lines(lines: Iterable[dict[str, Any]]) -> int:
    """One JSON line each (a batch of queries); returns how many report an error."""
    failed = 0
    for line in lines:
        failed += "error" in line
        typer.echo(json.dumps(line, ensure_ascii=False))
    return failed


def print_tables(lines: Iterable[dict[str, Any]]) -> int:
    """A table of hits per query of a batch (the rows of a --vectors file); returns how many failed."""
    failed = 0
    for line in lines:
        typer.echo(f"query {json.dumps(line['query'], ensure_ascii=False)}:")
        if "error" in line:
            failed += 1
            typer.echo(f"  error: {line['error']}")
        else:
            print_results(line["results"])
    return failed


def _table(header: str, lines: list[str], empty: str) -> None:
    typer.echo("\n".join([header, *lines]) if lines else empty)


def print_results(hits: list[dict[str, Any]]) -> None:
    def line(hit: dict[str, Any]) -> str:
        caption = " ".join((hit.get("caption") or hit.get("name") or "").split())
        caption = caption if len(caption) <= 50 else caption[:49] + "…"
        return f"{hit['rank']:>4}  {hit['score']:>6.3f}  {hit['modality']:<8}  {caption:<50}  {hit.get('source')}"

    _table(f"{'rank':>4}  {'score':>6}  {'modality':<8}  {'caption':<50}  source", [line(h) for h in hits],
           "No results.")


def print_eval(rows: list[dict[str, Any]]) -> None:
    def line(row: dict[str, Any], kind: str) -> str:
        m = row[kind]
        label = "exact" if kind == "exact" else f"index {row['index_type']}"
        median = f"{m['median_rank']:.0f}" if m["median_rank"] is not None else "-"
        return (f"{row['query'] + ' -> ' + row['target']:<20}{label:<22}{m['recall@1']:>7.3f}"
                f"{m['recall@5']:>7.3f}{m['recall@10']:>7.3f}{median:>8}{m['queries']:>9}")

    _table(f"{'query -> target':<20}{'search':<22}{'R@1':>7}{'R@5':>7}{'R@10':>7}{'median':>8}{'queries':>9}",
           [line(row, kind) + (" (bridged)" if row.get("through_bridge") else "")
            for row in rows for kind in ("exact", "index") if kind in row],
           "No pairs to evaluate: no sample has a caption and a vector in two modalities.")
    if any("queries_from" in row for row in rows):
        typer.echo("Bridge space: queries are the held-out samples only (20% of keys, whose captions the mapping "
                   "never learned from); (bridged) marks pairs through the bridge.")


def print_samples(dataset: str, rows: list[dict[str, Any]], metadata: dict[str, Any]) -> None:
    """A glance at an ingested dataset: counts, then a few samples."""
    counts = metadata["counts"]
    typer.echo(f"\nDataset {dataset}: {counted(counts['samples'], 'sample')} in "
               f"{counted(len(metadata['shards']), 'shard')}; "
               + ", ".join(f"{n} with {m}" for m, n in counts["modalities"].items()))
    typer.echo(f"{'key':<22}{'modalities':<16}caption")
    for row in sorted(rows, key=lambda r: r["source"])[::max(1, len(rows) // 8)]:
        caption = (row["caption"] or "").strip().replace("\n", " ")
        typer.echo(f"{row['key']:<22}{'+'.join(row['modalities']):<16}{caption[:60]}")
