"""How a sample's ``source`` names where it came from, as the samples and rejects parquet record it.

    /data/cat.jpg                 a file (or /data/cat.{jpg,txt} for files sharing a stem)
    /data/list.csv#row=7          a manifest's row
    /data/part.tar::dir/key       a sample (or member) of a tar

Ingest writes these; a repair reads the file back out of them to look for it again.
"""

from __future__ import annotations

import posixpath

ROW = "#row="
IN_TAR = "::"


def row_source(manifest: str, number: int) -> str:
    return f"{manifest}{ROW}{number}"


def tar_source(tar: str, name: str) -> str:
    return f"{tar}{IN_TAR}{name}"


def source_file(source: str) -> str:
    """The file a source names: the manifest of a row, the tar of a member, else the source itself."""
    return source.split(IN_TAR)[0].split(ROW)[0]


def source_name(source: str) -> str:
    """A source without the folders above its file (cat.jpg, list.csv#row=7, part.tar::dir/key): what names a
    sample that has no caption, and never reveals where the server keeps its files."""
    file = source_file(source)
    return posixpath.basename(file.rstrip("/")) + source[len(file):]
