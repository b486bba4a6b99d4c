"""The mmindex command as a user meets it: summaries and errors that say what to do (the demo: test_first_hour)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import read_shards, read_table
from mmindex.cli import app

runner = CliRunner()


def test_ingest_prints_a_summary_and_a_repeat_says_nothing_to_do(corpus: Path, tmp_path: Path):
    (corpus / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "ds"
    first = runner.invoke(app, ["ingest", str(corpus), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "Ingested" in first.output and "samples/s" in first.output
    assert "unreadable image" in first.output and "rejects" in first.output
    again = runner.invoke(app, ["ingest", str(corpus), "--out", str(out)])
    assert again.exit_code == 0 and "Nothing to do" in again.output


def test_beam_options_pass_through(corpus: Path, tmp_path: Path):
    default = runner.invoke(app, ["ingest", str(corpus / "texts"), "--out", str(tmp_path / "a")])
    other = runner.invoke(app, ["ingest", str(corpus / "texts"), "--out", str(tmp_path / "b"),
                                "--runner=BundleBasedDirectRunner"])
    assert default.exit_code == 0 and other.exit_code == 0, other.output
    shard = Path("shards", "000000.tar")
    assert (tmp_path / "b" / shard).read_bytes() == (tmp_path / "a" / shard).read_bytes()


def test_version_and_help():
    assert runner.invoke(app, ["--version"]).output.startswith("mmindex 0.")
    help_text = runner.invoke(app, ["ingest", "--help"]).output
    assert "--shard-size" in help_text and "--profile" in help_text and "--workers" in help_text


def test_errors_are_clear(tmp_path: Path):
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "ds")])
    assert missing.exit_code == 2 and "source not found" in missing.output
    bad_size = runner.invoke(app, ["ingest", str(tmp_path), "--out", str(tmp_path / "ds"), "--shard-size", "lots"])
    assert bad_size.exit_code == 2 and "--shard-size" in bad_size.output
    no_source = runner.invoke(app, ["ingest", "--runner=DirectRunner", "--out", str(tmp_path / "ds")])
    assert no_source.exit_code == 2
    not_ours = tmp_path / "other"
    not_ours.mkdir()
    (not_ours / "mmindex.json").write_text('{"format": "something-else"}')
    foreign = runner.invoke(app, ["ingest", str(tmp_path / "other"), "--out", str(not_ours)])
    assert foreign.exit_code == 2 and "not an mmindex dataset" in foreign.output


def test_runner_profile_sends_the_job_to_a_job_server(corpus: Path, tmp_path: Path, job_service: str, monkeypatch):
    monkeypatch.setenv("JOB_ENDPOINT", job_service)
    result = runner.invoke(app, ["ingest", str(corpus / "texts"), "--out", str(tmp_path / "ds"),
                                 "--profile", "portable"])
    assert result.exit_code == 0, result.output
    assert len(read_table(tmp_path / "ds" / "samples")) == len(list((corpus / "texts").glob("*.txt")))


def test_runner_profiles_say_what_is_missing(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("FLINK_MASTER", raising=False)
    result = runner.invoke(app, ["ingest", str(tmp_path), "--out", str(tmp_path / "ds"), "--profile", "flink"])
    assert result.exit_code == 2 and "FLINK_MASTER" in result.output
    unknown = runner.invoke(app, ["ingest", str(tmp_path), "--out", str(tmp_path / "ds"), "--profile", "yarn"])
    assert unknown.exit_code == 2 and "dataflow, flink, portable, spark" in unknown.output


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 3 MB file system that fills up (tmpfs; needs root, as CI has)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_exit_1_and_the_next_run_completes(corpus: Path, tmp_path: Path, small_disk: Path):
    out = small_disk / "ds"
    full = runner.invoke(app, ["ingest", str(corpus), "--out", str(out), "--shard-size", "10"])
    assert full.exit_code == 1, full.output
    errors = [line for line in full.output.splitlines() if line.startswith("Error")]
    assert errors == [errors[0]] and "no space left on the disk holding" in errors[0] and str(out) in errors[0]
    assert "Traceback" not in full.output
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")], "no temporary file is left"
    for samples in (out / "samples").glob("*.parquet"):  # what is committed is whole
        keys = {row["key"] for row in pq.read_table(samples).to_pylist()}
        with tarfile.open(out / "shards" / f"{samples.stem}.tar") as tar:
            assert {name.split(".")[0] for name in tar.getnames()} == keys

    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    again = runner.invoke(app, ["ingest", str(corpus), "--out", str(out), "--shard-size", "10"])
    assert again.exit_code == 0, again.output
    reference = runner.invoke(app, ["ingest", str(corpus), "--out", str(tmp_path / "ref"), "--shard-size", "10"])
    assert reference.exit_code == 0
    assert set(read_shards(out)) == set(read_shards(tmp_path / "ref"))
