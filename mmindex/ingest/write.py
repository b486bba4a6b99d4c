"""Committing results: shard tars and their samples parquet."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from mmindex.dataset.checksums import Recorder
from mmindex.dataset.layout import Dataset, shard_name
from mmindex.dataset.samples import samples_bytes
from mmindex.ingest.records import SampleRecord, ShardWritten
from mmindex.ingest.validate import load_member
from mmindex.media import Limits
from mmindex.sizes import counted, format_size
from mmindex.webdataset import write_tar

log = logging.getLogger("mmindex")


class SourceChanged(RuntimeError):
    """A file changed between validation and writing; its shard is not committed."""


def _member_bytes(record: SampleRecord, limits: Limits) -> dict[str, bytes]:
    """The bytes that were checked: carried inline, or read again here (a source can change in between)."""
    members = {}
    for ext, member in record.members.items():
        if member.data is not None:
            members[ext] = member.data
            continue
        data = load_member(member, limits)
        if hashlib.sha256(data).hexdigest() != record.digests[ext]:
            raise SourceChanged(f"{record.source} changed while it was being ingested; run the ingest again")
        members[ext] = data
    return members


def tar_samples(records: list[SampleRecord], limits: Limits) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, members) of each record, in the order given: what a shard tar holds."""
    return ((r.key, _member_bytes(r, limits)) for r in records)


@dataclass(frozen=True)
class WrittenTar:
    """A shard whose tar is written but not yet committed: its summary, samples parquet and recorded sums."""

    shard: ShardWritten
    samples: bytes
    recorder: Recorder


def write_shard_tar(number: int, records: list[SampleRecord], dataset: Dataset, limits: Limits) -> WrittenTar:
    """Writes one shard's tar; what it returns is committed by ``commit_shard``."""
    records = list({r.key: r for r in sorted(records, key=lambda r: r.key)}.values())  # a SRC given twice
    name = shard_name(number)
    recorder = Recorder(dataset.root, dataset.record_path(number))
    with recorder.writer(dataset.shard_path(number)) as out:
        write_tar(out, tar_samples(records, limits))
    rows = [{**r.row, "key": r.key, "shard": name} for r in records]
    return WrittenTar(ShardWritten(name, len(records), out.size, out.sha256.hexdigest()),
                      samples_bytes(rows), recorder)


def commit_shard(written: WrittenTar, dataset: Dataset) -> None:
    """Writes the shard's checksum record and then its samples parquet, which commits it."""
    shard = written.shard
    written.recorder.commit(dataset.samples_path(int(shard.name)), written.samples)
    log.info("ingest: wrote shard %s (%s, %s)", shard.name, counted(shard.samples, "sample"), format_size(shard.bytes))
