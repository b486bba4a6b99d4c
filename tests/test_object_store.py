"""Datasets and sources on an object store (here ``mem://``, through Beam's FileSystems) come out the same
as on a local disk: the code paths gs:// and s3:// users take."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ingest, read_table
from memfs import MemoryFileSystem, upload


@pytest.fixture
def store():
    MemoryFileSystem.objects.clear()
    yield MemoryFileSystem.objects
    MemoryFileSystem.objects.clear()


def test_object_store_dataset_matches_local(corpus: Path, tmp_path: Path, store: dict[str, bytes]):
    (corpus / "broken.jpg").write_bytes(b"no image")
    photo = sorted((corpus / "photos").glob("*.jpg"))[0]
    (corpus / "list.csv").write_text(f"image,caption\nphotos/{photo.name},from a manifest\n../escape.jpg,x\n")
    upload(corpus, "mem://bucket/raw")
    local = tmp_path / "local"
    ingest(corpus, corpus / "list.csv", dataset=local, extra=("--shard-size=12",))
    report = ingest("mem://bucket/raw", "mem://bucket/raw/list.csv", dataset="mem://bucket/ds",
                    extra=("--shard-size=12",))

    shards = sorted(p.name for p in (local / "shards").glob("*.tar"))
    assert len(shards) > 1
    for name in shards:
        assert store[f"mem://bucket/ds/shards/{name}"] == (local / "shards" / name).read_bytes()
    local_samples = {r["key"]: r for r in read_table(local / "samples")}
    assert report.counts.ingested == len(local_samples)
    assert {r["reason"] for r in read_table(local / "rejects")} == {
        "unreadable image", "path leaves the manifest's folder", "unsupported file type"}
    assert sum(report.counts.rejected_by_reason.values()) == len(read_table(local / "rejects"))
    assert not [p for p in store if "/.tmp-" in p], "temporary objects are renamed or removed"
    meta = json.loads(store["mem://bucket/ds/mmindex.json"])
    assert meta["counts"]["samples"] == len(local_samples)

    again = ingest("mem://bucket/raw", "mem://bucket/raw/list.csv", dataset="mem://bucket/ds")
    assert again.changed is False


def test_object_store_tars_are_read_by_byte_range(corpus: Path, tmp_path: Path, store: dict[str, bytes]):
    local = tmp_path / "local"
    ingest(corpus / "speech", dataset=local)
    upload(local / "shards", "mem://bucket/old")
    report = ingest("mem://bucket/old/*.tar", dataset="mem://bucket/new")
    assert report.counts.ingested == len(read_table(local / "samples"))
    assert store["mem://bucket/new/shards/000000.tar"] == (local / "shards" / "000000.tar").read_bytes()


def test_local_deletes_take_plain_os_calls(tmp_path: Path):
    """Cleaning up leftovers on a local disk (every run does) needs no Beam import, and a file already gone
    (another cleaner got there first) is not an error; the module's promise for local paths."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "inside.npy").write_bytes(b"x")
    (tmp_path / ".tmp-leftover").write_bytes(b"x")
    script = ("import sys; from mmindex import storage; "
              f"storage.delete([{str(tmp_path / '.tmp-leftover')!r}, {str(tmp_path / 'folder')!r}, "
              f"{str(tmp_path / 'gone.json')!r}]); "
              "assert 'apache_beam' not in sys.modules, 'Beam was imported'")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[1])
    assert list(tmp_path.iterdir()) == []
