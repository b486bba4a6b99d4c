"""``mmindex demo``: the whole job on the built-in corpus, printed as each command would print it, then the
commands to try next. The dataset it builds becomes the default of search and serve, from any folder."""

from __future__ import annotations

from pathlib import Path

import typer

from mmindex import console
from mmindex.dataset import Dataset
from mmindex.dataset.runs import read_metadata
from mmindex.dataset.samples import read_samples
from mmindex.demo import CORPUS, remember_dataset
from mmindex.embed.run import EmbedReport, EmbedSettings, embed
from mmindex.index.run import IndexSettings, build_indexes
from mmindex.ingest.run import IngestSettings, ingest
from mmindex.search import Query, Searcher
from mmindex.sizes import counted
from mmindex.spaces import resolve_space

SEARCHES = ("a photo of a cat", "the conference is locked")


def run_demo(out: Path) -> None:
    dataset = str(out.resolve() / "dataset")  # absolute: the commands printed at the end work from any folder
    typer.echo(f"== mmindex ingest {CORPUS} --out {dataset}")
    console.print_ingest(ingest(IngestSettings((str(CORPUS),), dataset)), dataset)
    written = Dataset(dataset)
    first_shard = written.samples_path(written.committed_shards()[0])
    console.print_samples(dataset, read_samples(first_shard).to_pylist(), read_metadata(written))
    typer.echo(f"\n== mmindex embed {dataset} --model offline")
    embedded = embed(EmbedSettings(dataset))
    console.print_embed(embedded)
    typer.echo(f"\n== mmindex index {dataset}")
    console.print_index(build_indexes(IndexSettings(dataset)))
    searcher = Searcher(dataset, resolve_space("offline"))
    for text in SEARCHES:
        typer.echo(f"\n== mmindex search {text!r} --dataset {dataset} -k 5")
        console.print_results(searcher.search(Query(text=text), k=5))
    _next_steps(dataset, embedded)


def _next_steps(dataset: str, embedded: EmbedReport) -> None:
    """What to run next, with the dataset's absolute path; and the dataset remembered as the default."""
    try:
        default = f"it is now the default of search and serve, from any folder ({remember_dataset(Path(dataset))})"
    except OSError as err:
        default = f"it could not be made the default ({err}): give --dataset"
    typer.echo(f"\nThe demo dataset is {dataset}; {default}. Next, try:\n"
               f"  mmindex search \"a cup of coffee\" --modality image --dataset {dataset}\n"
               f"  mmindex search \"press 1 to repeat the message\" --modality audio --dataset {dataset}\n"
               f"  mmindex search --image {CORPUS / 'photos' / 'chelsea_cat.jpg'} --modality text --dataset {dataset}\n"
               f"  mmindex eval {dataset}\n"
               f"  mmindex serve --dataset {dataset}    # then open http://127.0.0.1:8080/\n"
               f"Your own files: mmindex ingest FOLDER --out DATASET, then mmindex embed DATASET, mmindex index "
               f"DATASET and mmindex search \"...\" --dataset DATASET.")
    sounds = sum(items for (modality, _), items in embedded.skipped.items() if modality == "audio")
    if sounds:
        typer.echo(f"The offline space hears speech only: {counted(sounds, 'sound')} without speech (the animals) "
                   f"were skipped and are found by their captions; `--model clap` embeds any sound (its model comes "
                   f"from the Hugging Face hub).")
