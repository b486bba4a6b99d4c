"""Discovery: turn each SRC argument (a folder tree, a manifest, webdataset tars) into candidate samples.

Hostile layouts are caught here, before any byte is read: symlinks out of the source root, tar members
with absolute or ``..`` paths, links and devices inside tars, manifest paths that leave the manifest's
folder. Each becomes a Candidate carrying its problem, so it lands in rejects with a reason.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import json
import logging
import lzma
import os
import posixpath
import stat
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mmindex import storage
from mmindex.dataset.layout import Dataset
from mmindex.dataset.parquet import parquet_file
from mmindex.dataset.sources import row_source, tar_source
from mmindex.ingest.records import Candidate, Member
from mmindex.media import Limits
from mmindex.modalities import MEDIA, modality_of, unsupported_reason
from mmindex.progress import Progress
from mmindex.sizes import counted
from mmindex.webdataset import split_key

log = logging.getLogger("mmindex")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class ManifestColumns:
    """Which manifest columns name the image, the audio clip and the caption; the first present wins."""

    image: tuple[str, ...] = ("image", "image_path", "img", "img_path", "filepath", "file_path")
    audio: tuple[str, ...] = ("audio", "audio_path", "sound", "wav")
    caption: tuple[str, ...] = ("caption", "text", "title", "description", "prompt")

    @classmethod
    def choose(cls, image: str | None = None, audio: str | None = None, caption: str | None = None) -> ManifestColumns:
        """The defaults, with each column a user named taking the place of its list."""
        default = cls()
        return cls(*((name.lower(),) if name else getattr(default, field)
                     for field, name in (("image", image), ("audio", audio), ("caption", caption))))


def source_kind(path: str) -> str:
    """'tar', 'manifest' or 'tree', from the path's form."""
    lower = path.lower()
    if lower.endswith(TAR_SUFFIXES):
        return "tar"
    if lower.endswith(MANIFEST_SUFFIXES):
        return "manifest"
    return "tree"


def is_glob(src: str) -> bool:
    return any(c in src for c in GLOB_CHARS)


def check_source(src: str) -> None:
    """Raises FileNotFoundError with a helpful message when SRC names nothing."""
    if is_glob(src):
        if not storage.glob(src):
            raise FileNotFoundError(f"no file matches {src!r}")
    elif storage.is_local(src) and not os.path.exists(src):
        raise FileNotFoundError(f"source not found: {src!r} (Beam options go as --name=value)")


def discover(src: str, columns: ManifestColumns, limits: Limits, scratch: str) -> Iterator[Candidate]:
    """Every candidate sample under one SRC argument; ``scratch`` is where compressed tars are unpacked.

    Media files named directly (or by a glob such as ``photos/*``) are grouped by stem like a folder's.
    """
    paths = storage.glob(src) if is_glob(src) else [src]
    loose: list[tuple[str, int]] = []
    for path in paths:
        kind = source_kind(path)
        if kind == "tar":
            yield from read_tar(path, limits, scratch)
        elif kind == "manifest":
            yield from read_manifest(path, columns)
        elif storage.is_local(path):
            if os.path.isdir(path):
                yield from walk_local_tree(path)
            else:
                loose.append((path, os.path.getsize(path)))
        else:
            yield from group_by_stem(storage.list_files(storage.join(path, "**")) or storage.list_files(path))
    yield from group_by_stem(loose)


def discover_batches(src: str, columns: ManifestColumns, limits: Limits, scratch: str,
                     size: int = 64) -> Iterator[list[Candidate]]:
    """Candidates in small batches: a batch is the unit that executors spread over threads and workers."""
    batch: list[Candidate] = []
    progress = Progress(f"ingest: found in {src}", unit="candidates")
    for candidate in discover(src, columns, limits, scratch):
        batch.append(candidate)
        progress.add()
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
    log.info("ingest: found %s in %s", counted(progress.count, "candidate sample"), src)


# --- folder trees -------------------------------------------------------------------------------------

def _split_stem(name: str) -> tuple[str, str]:
    stem, dot, ext = name.rpartition(".")
    return (stem, ext) if dot and stem else (name, "")


def group_by_stem(files: Iterable[tuple[str, int]]) -> Iterator[Candidate]:
    """Files that share a folder and a stem (``cat.jpg``, ``cat.txt``) form one candidate."""
    groups: dict[str, list[Member]] = defaultdict(list)
    for path, size in files:
        name = path[path.rfind("/") + 1:]
        stem, ext = _split_stem(name)
        if modality_of(ext) is None:
            yield Candidate(source=path, problem=unsupported_reason(ext))
        else:
            groups[path[: len(path) - len(name)] + stem].append(Member(ext=ext.lower(), path=path, size=size))
    for stem_path in sorted(groups):
        members = tuple(sorted(groups[stem_path], key=lambda m: m.ext))
        yield Candidate(source=describe(stem_path, members), members=members)


def describe(stem_path: str, members: tuple[Member, ...]) -> str:
    """``/d/Cat.JPG`` (the file's own path) for one file, ``/d/cat.{jpg,txt}`` for several."""
    if len(members) == 1:
        only = members[0]
        return only.path if only.path and not only.offset else f"{stem_path}.{only.ext}"
    return f"{stem_path}.{{{','.join(m.ext for m in members)}}}"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk_local_tree(root: str) -> Iterator[Candidate]:
    """Walks a local folder, files before subfolders and each in name order, without following symlinked
    folders; refuses links that leave the root. One directory listing and one stat per file."""
    real_root = os.path.realpath(root)
    folders = [root]
    while folders:
        folder = folders.pop()
        if Dataset(folder).exists():  # e.g. --out inside the corpus: its shards are not new inputs
            log.info("ingest: not reading %s: it is an mmindex dataset (give its shards as tars instead)", folder)
            continue
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as err:
            yield Candidate(source=folder, problem=("unreadable folder", err.strerror or str(err)))
            continue
        files: list[tuple[str, int]] = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                continue
            problem, size = _local_file_problem(entry, real_root)
            if problem:
                yield Candidate(source=entry.path, problem=problem)
            else:
                files.append((entry.path, size))
        yield from group_by_stem(files)
        folders += reversed([e.path for e in entries if e.is_dir(follow_symlinks=False)])


def _local_file_problem(entry: os.DirEntry, real_root: str) -> tuple[tuple[str, str] | None, int]:
    """Why a folder entry cannot be read (or None), and its size."""
    if entry.is_symlink():
        target = os.path.realpath(entry.path)
        if not _inside(target, real_root):
            return ("symlink leaves the source", f"points to {target}, outside {real_root}"), 0
        if not os.path.exists(target):
            return ("broken symlink", f"points to {target}, which does not exist"), 0
        if os.path.isdir(target):
            return ("symlinked folder", "symlinked folders are not followed (they could loop or repeat samples)"), 0
    try:
        status = entry.stat()
    except OSError as err:
        return ("unreadable file", err.strerror or str(err)), 0
    if not stat.S_ISREG(status.st_mode):
        return ("not a regular file", "devices, sockets and pipes are never read"), 0
    return None, status.st_size


# --- manifests ----------------------------------------------------------------------------------------

def read_manifest(path: str, columns: ManifestColumns) -> Iterator[Candidate]:
    """One candidate per row; paths are relative to the manifest's folder and must stay inside it."""
    base = os.path.dirname(os.path.abspath(path)) if storage.is_local(path) else posixpath.dirname(path)
    try:
        for number, row in _manifest_rows(path):
            source = row_source(path, number)
            if isinstance(row, dict):
                yield _row_candidate(source, row, base, columns)
            else:
                yield Candidate(source=source, problem=("invalid manifest row", row[:300]))
    except (OSError, ValueError, csv.Error) as err:
        yield Candidate(source=path, problem=("unreadable manifest", f"stopped reading: {err}"[:300]))


def _pick(row: dict, names: tuple[str, ...]) -> str | None:
    by_lower = {str(k).lower(): k for k in row}
    return next((by_lower[n] for n in names if n in by_lower), None)


def _row_candidate(source: str, row: dict, base: str, columns: ManifestColumns) -> Candidate:
    image_col, audio_col, caption_col = (_pick(row, names) for names in (columns.image, columns.audio, columns.caption))
    if not (image_col or audio_col or caption_col):
        return Candidate(source=source, problem=(
            "unusable manifest row", f"no column names an image ({', '.join(columns.image)}), audio "
            f"({', '.join(columns.audio)}) or caption ({', '.join(columns.caption)})"))
    members: list[Member] = []
    for col in (image_col, audio_col):
        value = row.get(col) if col else None
        if value in (None, ""):
            continue
        resolved = resolve_inside(base, str(value))
        if resolved is None:
            return Candidate(source=source, problem=(
                "path leaves the manifest's folder", f"{value!r} is not inside {base}"))
        ext = _split_stem(posixpath.basename(resolved))[1]
        if modality_of(ext) not in MEDIA:
            return Candidate(source=source, problem=unsupported_reason(ext))
        members.append(Member(ext=ext.lower(), path=resolved))
    caption = row.get(caption_col) if caption_col else None
    if caption not in (None, ""):
        members.append(Member(ext="txt", data=str(caption).encode("utf-8", "surrogateescape")))
    used = {image_col, audio_col, caption_col}
    extra = {k: v for k, v in row.items() if k not in used and v not in (None, "")}
    if extra:
        members.append(Member(ext="json", data=json.dumps(extra, sort_keys=True, ensure_ascii=False,
                                                            default=str).encode("utf-8", "surrogateescape")))
    if not members:
        return Candidate(source=source, problem=("empty manifest row", "no image, audio or caption value"))
    return Candidate(source=source, members=tuple(sorted(members, key=lambda m: m.ext)))


def resolve_inside(base: str, relative: str) -> str | None:
    """``relative`` joined to ``base``, or None if it points outside ``base`` (``..``, absolute, URL)."""
    if "://" in relative:
        return None
    if storage.is_local(base):
        joined = os.path.normpath(os.path.join(base, relative))
        return joined if _inside(os.path.realpath(joined), os.path.realpath(base)) else None
    scheme, _, root = base.partition("://")  # normpath would fold the '//' of 'gs://'
    root = "/" + root.strip("/")
    joined = posixpath.normpath(posixpath.join(root, relative))
    return f"{scheme}://{joined.lstrip('/')}" if joined.startswith(root + "/") else None


def _manifest_rows(path: str) -> Iterator[tuple[int, dict | str]]:
    """(row number, row) for every data row; a row that cannot be parsed comes as its raw text."""
    lower = path.lower()
    if lower.endswith(".parquet"):
        number = 0
        for batch in parquet_file(path).iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                number += 1
                yield number, row
        return
    with storage.open_read(path) as f:
        # Bytes that are not UTF-8 are kept (as surrogates) so that the row they are in, not the whole
        # manifest, is rejected: its caption or metadata then fails the UTF-8 check.
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="surrogateescape", newline="")
        if lower.endswith(".jsonl"):
            for number, line in enumerate(text, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except ValueError:
                    yield number, line.strip()
            return
        csv.field_size_limit(2**31 - 1)  # a long caption is refused by its row's size check, not here
        reader = csv.reader(text, delimiter="\t" if lower.endswith(".tsv") else ",")
        header = next(reader, None) or []
        for row in reader:
            if len(row) != len(header):
                yield reader.line_num, f"{len(row)} fields where the header has {len(header)}"
            else:
                yield reader.line_num, dict(zip(header, row, strict=True))


# --- webdataset tars ----------------------------------------------------------------------------------

DECOMPRESSORS = {".tar.gz": gzip.open, ".tgz": gzip.open, ".tar.bz2": bz2.open, ".tar.xz": lzma.open}
MAX_EXPANSION = 100  # a compressed tar may grow to this many times its size; bombs grow a thousandfold


class _DecompressionBomb(Exception):
    pass


def read_tar(path: str, limits: Limits, scratch: str) -> Iterator[Candidate]:
    """Members sharing a webdataset key (``dir/key.ext``) form one candidate, referenced by byte range.

    A compressed tar is first decompressed into ``scratch`` (a prefix in the dataset's scratch area),
    so that its members need not travel through the pipeline in memory.
    """
    readable = path
    if path.lower().endswith(tuple(DECOMPRESSORS)):
        try:
            readable = decompress_tar(path, scratch, limits)
        except _DecompressionBomb as err:
            yield Candidate(source=path, problem=("decompression bomb", str(err)))
            return
        except (OSError, EOFError, lzma.LZMAError) as err:
            yield Candidate(source=path, problem=("unreadable tar", f"cannot decompress: {err}"))
            return
    group_key: str | None = None
    group: list[Member] = []
    try:
        with storage.open_read(readable) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                if info.isdir():
                    continue
                problem = _tar_member_problem(info, limits)
                key, ext = split_key(info.name)
                if problem is None and modality_of(ext) is None:
                    problem = unsupported_reason(ext)
                if problem:
                    yield Candidate(source=tar_source(path, info.name), problem=problem)
                    continue
                if key != group_key:
                    if group:
                        yield _tar_candidate(path, group_key, group)
                    group_key, group = key, []
                group.append(Member(ext=ext.lower(), path=readable, offset=info.offset_data, size=info.size))
    except (tarfile.TarError, OSError, EOFError) as err:
        yield Candidate(source=path, problem=("unreadable tar", f"stopped reading: {err}"))
    if group:
        yield _tar_candidate(path, group_key, group)


def decompress_tar(path: str, scratch: str, limits: Limits) -> str:
    """Decompresses ``path`` beside the run's scratch prefix; refuses to grow past MAX_EXPANSION times."""
    opener = next(fn for suffix, fn in DECOMPRESSORS.items() if path.lower().endswith(suffix))
    budget = max(limits.max_file_bytes, MAX_EXPANSION * storage.size(path))
    target = f"{scratch}-{hashlib.sha256(path.encode()).hexdigest()[:16]}.tar"
    with storage.open_read(path) as raw, opener(raw) as stream, storage.atomic_writer(target) as out:
        while chunk := stream.read(2**20):
            out.write(chunk)
            if out.size > budget:
                raise _DecompressionBomb(f"expands past {budget:,} bytes, {MAX_EXPANSION}x its size")
    return target


def _tar_candidate(path: str, key: str | None, members: list[Member]) -> Candidate:
    ordered = tuple(sorted(members, key=lambda m: m.ext))
    return Candidate(source=describe(tar_source(path, key or ""), ordered), members=ordered)


def _tar_member_problem(info: tarfile.TarInfo, limits: Limits) -> tuple[str, str] | None:
    name = info.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        return "unsafe path in tar", f"member name {name!r} is absolute or climbs out with '..'"
    if info.issym() or info.islnk():
        return "link in tar", f"links are refused (points to {info.linkname!r})"
    if not info.isreg():
        return "not a regular file", "devices and other special tar members are never read"
    if info.size > limits.max_file_bytes:
        return "file too large", f"{info.size:,} bytes is over the limit of {limits.max_file_bytes:,}"
    return None
