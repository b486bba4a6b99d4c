"""``mmindex demo``: the whole job on the built-in corpus, printed as each command would print it."""

from __future__ import annotations

from pathlib import Path

import typer

from mmindex import console
from mmindex.dataset import Dataset
from mmindex.dataset.runs import read_metadata
from mmindex.dataset.samples import read_samples
from mmindex.demo import CORPUS
from mmindex.embed.run import EmbedSettings, embed
from mmindex.index.run import IndexSettings, build_indexes
from mmindex.ingest.run import IngestSettings, ingest
from mmindex.search import Query, Searcher
from mmindex.spaces import resolve_space

SEARCHES = ("a photo of a cat", "the conference is locked")


def run_demo(out: Path) -> None:
    dataset = str(out / "dataset")
    typer.echo(f"== mmindex ingest {CORPUS} --out {dataset}")
    console.print_ingest(ingest(IngestSettings((str(CORPUS),), dataset)), dataset)
    written = Dataset(dataset)
    first_shard = written.samples_path(written.committed_shards()[0])
    console.print_samples(dataset, read_samples(first_shard).to_pylist(), read_metadata(written))
    typer.echo(f"\n== mmindex embed {dataset} --model offline")
    console.print_embed(embed(EmbedSettings(dataset)))
    typer.echo(f"\n== mmindex index {dataset}")
    console.print_index(build_indexes(IndexSettings(dataset)))
    searcher = Searcher(dataset, resolve_space("offline"))
    for text in SEARCHES:
        typer.echo(f"\n== mmindex search {text!r} --dataset {dataset} -k 5")
        console.print_results(searcher.search(Query(text=text), k=5))
