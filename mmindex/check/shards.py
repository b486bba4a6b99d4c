"""Rebuilding a damaged shard tar from the sources it was ingested from.

The samples parquet says which samples the shard holds and where each came from; mmindex.json says which
sources each ingest read and with which limits. The sources are discovered again, and only the candidates
whose source is one of the shard's are checked (so a large corpus is listed, not read). A sample is found when
its content digest and size match its row; the tar is rewritten from them in key order and replaces the
damaged one only if it is byte for byte the recorded tar. Otherwise the samples that could not be found are
listed, by key and source, and nothing is replaced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mmindex import storage
from mmindex.dataset import Dataset, checksums, shard_name
from mmindex.dataset.runs import recorded_sources
from mmindex.dataset.samples import read_samples
from mmindex.dataset.sources import source_file
from mmindex.ingest.discover import ManifestColumns, discover
from mmindex.ingest.records import Candidate, SampleRecord
from mmindex.ingest.validate import check
from mmindex.ingest.write import SourceChanged, tar_samples
from mmindex.media import Limits
from mmindex.webdataset import write_tar


@dataclass(frozen=True)
class LostSample:
    shard: str
    key: str
    source: str
    why: str    # source gone, source changed, ...

    @classmethod
    def of(cls, shard: str, row: dict, why: str | None = None) -> LostSample:
        path = source_file(row["source"])
        if why is None:
            why = "source changed" if storage.is_local(path) and os.path.exists(path) else "source gone"
        return cls(shard, row["key"], row["source"], why)


@dataclass(frozen=True)
class Rebuilt:
    shard: str
    lost: list[LostSample]      # empty: the tar was rebuilt
    reason: str = ""            # why it was not replaced


class _Differs(Exception):
    pass


def _ingest_runs(dataset: Dataset) -> list[tuple[str, Limits, ManifestColumns]]:
    """(source, limits, manifest columns) of every source an ingest of this dataset read."""
    return [(recorded.source, Limits(**recorded.limits),
             ManifestColumns(**{k: tuple(v) for k, v in recorded.manifest_columns.items()}))
            for recorded in recorded_sources(dataset)]


def _names_a_source(candidate: Candidate, sources: set[str]) -> bool:
    """Whether the candidate may be one of the shard's samples, judged by paths alone (nothing is read)."""
    return candidate.source in sources or any(
        m.path is not None and m.offset == 0 and storage.readable(m.path) in sources for m in candidate.members)


def find_samples(dataset: Dataset, rows: list[dict]) -> tuple[dict[str, tuple[SampleRecord, Limits]], str]:
    """The shard's samples found in their sources, by key; and why none could be looked for, if so."""
    wanted = {row["key"]: row for row in rows}
    sources = {row["source"] for row in rows}
    runs = _ingest_runs(dataset)
    if not runs:
        return {}, f"no ingest run is recorded in {dataset.metadata_path}"
    found: dict[str, tuple[SampleRecord, Limits]] = {}
    scratch = dataset.scratch_path("repair")
    try:
        for source, limits, columns in runs:
            if len(found) == len(wanted):
                break
            if storage.is_local(source) and not os.path.exists(source) and not any(c in source for c in "*?["):
                continue
            for candidate in discover(source, columns, limits, scratch):
                if not _names_a_source(candidate, sources):
                    continue
                record = check(candidate, limits)
                row = wanted.get(getattr(record, "key", ""))
                if isinstance(record, SampleRecord) and row and sum(record.sizes) == row["bytes"]:
                    found.setdefault(record.key, (record, limits))
    finally:
        storage.delete(storage.glob(f"{scratch}*"))
    return found, ""


def rebuild_shard(dataset: Dataset, number: int) -> Rebuilt:
    """Rewrites shard ``number``'s tar from its sources if every sample is found unchanged and the result is the
    recorded tar; else lists what is lost."""
    name = shard_name(number)
    rows = read_samples(dataset.samples_path(number)).to_pylist()
    found, why = find_samples(dataset, rows)
    lost = [LostSample.of(name, row, why or None) for row in rows if row["key"] not in found]
    if lost:
        return Rebuilt(name, lost, why or "sources gone or changed since they were ingested")
    path = dataset.shard_path(number)
    try:
        recorded = (checksums.read_record(dataset.record_path(number)) or {}).get(checksums.relative(dataset.root,
                                                                                                       path))
    except checksums.RecordUnreadable:  # then each sample's digest and size are all there is to go by
        recorded = None
    records = [found[row["key"]] for row in sorted(rows, key=lambda r: r["key"])]
    try:
        with storage.atomic_writer(path) as out:
            write_tar(out, (sample for record, limits in records for sample in tar_samples([record], limits)))
            if recorded and checksums.mismatch(checksums.Sum(out.size, out.sha256.hexdigest()), recorded):
                raise _Differs
    except _Differs:
        why = "the tar rebuilt from the sources differs from the recorded one (a metadata .json changed?)"
        return Rebuilt(name, [LostSample.of(name, row, why) for row in rows], why)
    except SourceChanged as err:
        return Rebuilt(name, [LostSample.of(name, row, str(err)) for row in rows], str(err))
    return Rebuilt(name, [])
