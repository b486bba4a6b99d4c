"""Runs of the ingest: deterministic, incremental, a no-op when repeated, complete after an interruption,
and the same shards on every runner (in-process, several processes, Beam's portable job API)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from conftest import file_digests, ingest, read_shards, read_table
from mmindex.dataset import Dataset
from mmindex.dataset.lock import DatasetBusy
from mmindex.dataset.samples import totals
from mmindex.ingest import write

SHARDS = ("--shard-size=10",)


def committed_files(dataset: Path) -> dict[str, str]:
    """Digests of the shards and parquet files (mmindex.json holds times, so it is left out)."""
    return {k: v for k, v in file_digests(dataset).items() if not k.endswith("mmindex.json")}


def test_same_inputs_give_byte_identical_datasets(corpus: Path, tmp_path: Path):
    ingest(corpus, dataset=tmp_path / "a", extra=SHARDS)
    ingest(corpus, dataset=tmp_path / "b", extra=SHARDS)
    first = committed_files(tmp_path / "a")
    assert len([k for k in first if k.startswith("shards/")]) > 1
    assert first == committed_files(tmp_path / "b")


def test_repeat_is_a_no_op_and_says_so(corpus: Path, tmp_path: Path):
    dataset = tmp_path / "ds"
    first = ingest(corpus, dataset=dataset, extra=SHARDS)
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*") if p.is_file()}
    again = ingest(corpus, dataset=dataset, extra=SHARDS)
    assert again.changed is False
    assert again.counts.ingested == 0
    assert again.counts.already_present == first.counts.ingested + first.counts.duplicates_in_run
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*") if p.is_file()} == before


def test_new_inputs_go_into_new_shards_only(corpus: Path, tmp_path: Path):
    extra_dir = tmp_path / "later"
    extra_dir.mkdir()
    for path in sorted((corpus / "speech").iterdir())[:6]:
        shutil.move(path, extra_dir / path.name)
    dataset = tmp_path / "ds"
    first = ingest(corpus, dataset=dataset, extra=SHARDS)
    before = committed_files(dataset)

    second = ingest(corpus, extra_dir, dataset=dataset, extra=SHARDS)
    after = committed_files(dataset)
    assert {k: v for k, v in after.items() if k in before} == before, "finished shards are never touched"
    new_shards = sorted(k for k in set(after) - set(before) if k.startswith("shards/"))
    assert new_shards == [f"shards/{s.name}.tar" for s in second.shards_added]
    assert second.counts.ingested == 3  # six files: three clips with their transcripts
    assert second.counts.already_present == first.counts.ingested + first.counts.duplicates_in_run
    meta = json.loads((dataset / "mmindex.json").read_text())
    assert meta["counts"]["samples"] == first.counts.ingested + 3
    assert len(meta["runs"]) == 2


def test_an_interrupted_run_is_completed_by_the_next(corpus: Path, tmp_path: Path, monkeypatch):
    dataset = tmp_path / "ds"
    real_write_shard = write.write_shard_tar
    calls = []

    def dies_on_third_shard(number, records, *args):
        calls.append(number)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real_write_shard(number, records, *args)

    monkeypatch.setattr("mmindex.ingest.steps.write_shard_tar", dies_on_third_shard)
    with pytest.raises(Exception, match="killed"):
        ingest(corpus, dataset=dataset, extra=("--shard-size=10",))
    (dataset / "shards" / "000099.tar").write_bytes(b"leftover of a killed writer")
    visible = [p.name for p in dataset.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert "mmindex.json" not in visible
    committed_before = len(read_table(dataset / "samples"))
    assert committed_before > 0, "two shards were committed before the kill"
    monkeypatch.undo()

    report = ingest(corpus, dataset=dataset, extra=("--shard-size=10",))
    assert not (dataset / "shards" / "000099.tar").exists()
    reference = tmp_path / "clean"
    ingest(corpus, dataset=reference, extra=("--shard-size=10",))
    assert set(read_shards(dataset)) == set(read_shards(reference))
    assert committed_files(dataset) == committed_files(reference), "the next run continues the same shard plan"
    assert report.counts.already_present == committed_before
    assert totals(Dataset(str(dataset)))["samples"] == len(read_table(reference / "samples"))
    assert not [p for p in dataset.rglob(".tmp-*")], "no temporary file is left behind"


def test_two_worker_processes_give_the_same_shards(corpus: Path, tmp_path: Path):
    """One worker checks in the driver's thread and decodes audio on threads; two check on processes, which hand
    back what they checked: the shards are the same."""
    clip = np.random.default_rng(0).uniform(-0.5, 0.5, 48_000 * 3).astype(np.float32)
    soundfile.write(corpus / "long_noise.wav", clip, 48_000, subtype="PCM_16")
    ingest(corpus, dataset=tmp_path / "one", extra=SHARDS)
    ingest(corpus, dataset=tmp_path / "two", extra=(*SHARDS, "--workers=2"))
    assert committed_files(tmp_path / "one") == committed_files(tmp_path / "two")
    assert any(r["source"].endswith("long_noise.wav") for r in read_table(tmp_path / "one" / "samples"))


def test_portable_job_api_gives_the_same_shards(corpus: Path, tmp_path: Path, job_service: str):
    ingest(corpus, dataset=tmp_path / "local", extra=SHARDS)
    report = ingest(corpus, dataset=tmp_path / "portable", extra=(
        *SHARDS, "--runner=PortableRunner", f"--job_endpoint={job_service}", "--environment_type=LOOPBACK"))
    assert report.counts.ingested > 0
    assert committed_files(tmp_path / "local") == committed_files(tmp_path / "portable")


def test_a_second_writer_is_refused_and_a_dead_ones_lock_taken_over(corpus: Path, tmp_path: Path):
    dataset = tmp_path / "ds"
    dataset.mkdir()
    lock = dataset / ".lock"
    lock.write_text(json.dumps({"stage": "ingest", "pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(DatasetBusy, match="being written by another run"):
        ingest(corpus / "texts", dataset=dataset)
    assert not (dataset / "shards").exists()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"stage": "ingest", "pid": int(dead.stdout), "host": socket.gethostname()}))
    assert ingest(corpus / "texts", dataset=dataset).counts.ingested > 0
    assert not lock.exists()


def test_a_source_given_twice_is_ingested_once(corpus: Path, tmp_path: Path):
    dataset = tmp_path / "ds"
    report = ingest(corpus / "texts", corpus / "texts", dataset=dataset)
    texts = len(list((corpus / "texts").glob("*.txt")))
    assert len(read_shards(dataset)) == report.counts.ingested == texts  # read_shards refuses repeated keys
    assert report.counts.duplicates_in_run == texts


def test_a_dataset_inside_the_corpus_is_not_read_back_as_input(corpus: Path):
    dataset = corpus / "ds"
    first = ingest(corpus, dataset=dataset)
    again = ingest(corpus, dataset=dataset)
    assert again.changed is False and again.counts.found == first.counts.found


def test_a_deleted_mmindex_json_is_rewritten_by_the_next_run(corpus: Path, tmp_path: Path):
    dataset = tmp_path / "ds"
    first = ingest(corpus / "texts", dataset=dataset, extra=SHARDS)
    (dataset / "mmindex.json").unlink()
    again = ingest(corpus / "texts", dataset=dataset, extra=SHARDS)
    assert again.counts.ingested == 0 and again.counts.already_present == first.counts.ingested
    meta = json.loads((dataset / "mmindex.json").read_text())
    assert meta["counts"]["samples"] == first.counts.ingested
    assert [s["name"] for s in meta["shards"]] == [s.name for s in first.shards_added]
