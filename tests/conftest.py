"""Shared helpers: a writable copy of the real demo corpus, running the real ingest pipeline, reading results."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from mmindex.demo import CORPUS
from pipelines.ingest.pipeline import run


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A private copy of the demo corpus, so a test may add, break or link files."""
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target)
    return target


def ingest(*sources: Path | str, dataset: Path, extra: tuple[str, ...] = ()) -> dict:
    argv = [f"--source={s}" for s in sources] + [f"--dataset={dataset}", *extra]
    return run(argv)


def read_shards(dataset: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of every shard, read back the way a training job reads it: with webdataset."""
    urls = sorted(str(p) for p in (dataset / "shards").glob("*.tar"))
    samples: dict[str, dict[str, bytes]] = {}
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        assert key not in samples, f"key {key} appears twice"
        samples[key] = {k: v for k, v in sample.items() if not k.startswith("__")}
    return samples


def read_table(folder: Path) -> list[dict]:
    rows: list[dict] = []
    for path in sorted(folder.glob("*.parquet")):
        rows += pq.read_table(path).to_pylist()
    return rows


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by path relative to it."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def job_service():
    """Beam's own job service, as a Flink or Spark job server receives a pipeline."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    service = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                break
        time.sleep(0.2)
    else:
        service.kill()
        pytest.fail("the local job service did not start")
    yield f"localhost:{port}"
    service.terminate()
    service.wait(timeout=30)
