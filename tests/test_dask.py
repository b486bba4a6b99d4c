"""Ingest and embed on a real Dask cluster (Beam's DaskRunner, `--profile dask`): a scheduler and two worker
processes on localhost, in a folder of their own. The runs give the same shards, rows and vectors as Beam's
in-process runner, and a worker killed with SIGKILL in the middle of a run loses nothing: the cluster re-runs its
tasks, or gives up with one plain line and the next run completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_dataset, embeddings, file_digests, ingest
from mmindex.demo import CORPUS
from pipelines.embed.pipeline import run as run_beam_embed

ROOT = Path(__file__).resolve().parents[1]  # the checkout under test: the cluster's processes import it
SHARDS = "--shard-size=4"


class Cluster:
    """A dask.distributed scheduler and two worker processes (each under a nanny that restarts it)."""

    def __init__(self, folder: Path):
        from distributed import Client

        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        address_file = folder / "scheduler.json"
        self.processes = [subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
             "--dashboard-address", ":0", "--scheduler-file", str(address_file)],
            cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        deadline = time.monotonic() + 120
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.address = json.loads(address_file.read_text())["address"]
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", self.address, "--nworkers", "2", "--nthreads", "1",
             "--dashboard-address", ":0"], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.client = Client(self.address, timeout=60)
        self.client.wait_for_workers(2, timeout=120)

    def run(self, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
        """`mmindex ARGV --profile dask` in ``cwd``, as a user runs it."""
        return subprocess.run([sys.executable, "-m", "mmindex", *argv, "--profile", "dask"], cwd=cwd,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "DASK_SCHEDULER": self.address},
                              capture_output=True, text=True, timeout=600)

    def close(self) -> None:
        self.client.close()
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("dask-cluster"))
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    """Twelve clipart samples, a copy of one of them (a duplicate) and an image that is not one (a reject)."""
    folder = tmp_path_factory.mktemp("small") / "corpus"
    folder.mkdir()
    for path in sorted((CORPUS / "clipart").glob("*.png"))[:12]:
        shutil.copy(path, folder)
        shutil.copy(path.with_suffix(".txt"), folder)
    shutil.copy(folder / "airplane.png", folder / "airplane_copy.png")
    shutil.copy(folder / "airplane.txt", folder / "airplane_copy.txt")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


@pytest.fixture(scope="module")
def reference(small_corpus: Path, tiny_clip: Path, tmp_path_factory) -> Path:
    """The small corpus ingested and embedded on Beam's in-process runner: what the cluster must reproduce."""
    dataset = tmp_path_factory.mktemp("reference") / "dataset"
    ingest(small_corpus, dataset=dataset, extra=(SHARDS,), beam=True)
    run_beam_embed([str(dataset), f"--model={tiny_clip}", "--batch-size=4", "--threads=1"])
    return dataset


def committed(dataset: Path) -> dict[str, str]:
    """Digests of shards, samples and rejects (mmindex.json holds times, so it is left out)."""
    return {k: v for k, v in file_digests(dataset).items() if k.split("/")[0] in ("shards", "samples", "rejects")}


def embed_args(dataset: str, tiny_clip: Path) -> tuple[str, ...]:
    return "embed", dataset, f"--model={tiny_clip}", "--batch-size=4", "--threads=1"


def test_ingest_and_embed_on_a_dask_cluster_match_the_in_process_runner(cluster, small_corpus, reference, tiny_clip,
                                                                        tmp_path):
    # Relative paths, from a folder the workers do not run in: they are made absolute before the job is built,
    # and the rows record the absolute sources, as the reference's do.
    out = os.path.relpath(tmp_path / "ds", small_corpus.parent)
    done = cluster.run("ingest", "corpus", "--out", out, SHARDS, cwd=small_corpus.parent)
    assert done.returncode == 0, done.stderr
    assert "Ingested 12 samples into 3 new shard(s)" in done.stdout
    assert "rejected 1" in done.stdout and "1 within this run" in done.stdout
    assert committed(tmp_path / "ds") == committed(reference)
    done = cluster.run(*embed_args(out, tiny_clip), cwd=small_corpus.parent)
    assert done.returncode == 0, done.stderr
    assert "Embedded 3 of 3 pending shard(s)" in done.stdout
    assert embeddings(tmp_path / "ds", "tiny-clip") == embeddings(reference, "tiny-clip")
