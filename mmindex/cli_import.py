"""Bringing your own vectors: the ``mmindex import`` command and ``mmindex search``'s --vectors option, declared
here because cli.py holds the other commands within its size limit (cli.py registers them). Like every command,
import only parses options and prints its report (console.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmindex import console

EMBEDDINGS_HELP = (".npy files of vectors (float16 or float32, one per row), or folders of them (LAION's img_emb/). "
                   "Paths may be on any file system Beam has installed (gs://, s3://, ...).")
MODEL_HELP = ("The space the vectors belong to: a preset or model whose text encoder then embeds text queries "
              "(laion-vit-l-14 for LAION's ViT-L/14 release, clip, a local CLIP folder ...), or a new name for a "
              "space of vectors only, searched by vector (`mmindex search --vectors`).")
METADATA_HELP = ("Parquet files, or folders of them, row for row with the vectors and paired by file number "
                 "(img_emb_0007.npy with metadata_0007.parquet). Their 'caption' column becomes each sample's "
                 "caption; every other column is kept in the sample's KEY.json.")

QueryVectors = Annotated[Path | None, typer.Option(
    "--vectors", exists=True, dir_okay=False, help="A .npy of query vectors of the space, one per row (as `mmindex "
    "import` stores them, any scale): a search per row, printed as a table each, or one JSON line each with --json.")]


def import_command(
    embeddings: Annotated[list[str], typer.Argument(help=EMBEDDINGS_HELP, show_default=False)],
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset folder to create, or to add new files to.")],
    model: Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)],
    modality: Annotated[str, typer.Option(help="What the vectors embed: image, audio or text.")] = "image",
    metadata: Annotated[list[str] | None, typer.Option(help=METADATA_HELP)] = None,
    key_column: Annotated[str | None, typer.Option(
        help="Metadata column holding each sample's key (LAION: key). Default: the file's name and the row.")]
    = None,
) -> None:
    """Import embeddings made elsewhere (LAION's releases, your own GPUs), with their metadata, as the vectors
    of one space: then `mmindex index`, `search`, `serve` and `check` work on them.

    Every file is checked before anything is written (dtype, dimension, row counts, truncation; a pickle is
    never loaded); a file with NaN, infinite or zero rows is refused alone. Vectors are stored L2-normalised in
    float16, one shard per file. Running the same import again does nothing; new files are added.
    """
    from mmindex.importer.run import ImportSettings, import_embeddings

    console.setup_logging()
    with console.errors():
        report = import_embeddings(ImportSettings(tuple(embeddings), out, model, modality, tuple(metadata or ()),
                                                  key_column))
    console.print_import(report)
    if report.failures:
        raise typer.Exit(1)
