"""Ingest and embed on a real Dask cluster (Beam's DaskRunner, `--profile dask`): a scheduler and two worker
processes on localhost, in a folder of their own. The runs give the same shards, rows and vectors as a local run
(and so as Beam's in-process runner), and a worker killed with SIGKILL in the middle of a run loses nothing: the
cluster re-runs its tasks, or gives up with one plain line and the next run completes."""

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

from conftest import copy_dataset, embed, embeddings, file_digests, ingest
from mmindex.demo import CORPUS
from mmindex.presets import profile_args

pytestmark = pytest.mark.dask

ROOT = Path(__file__).resolve().parents[1]  # the checkout under test: the cluster's processes import it
SHARDS = "--shard-size=4"


class Cluster:
    """A dask.distributed scheduler and two worker processes (each under a nanny that restarts it), started in
    ``folder``, where their logs go."""

    def __init__(self, folder: Path):
        from distributed import Client

        self.processes: list[subprocess.Popen] = []
        self.client = None
        address_file = folder / "scheduler.json"
        try:
            self._start(folder, "scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                        "--dashboard-address", ":0", "--scheduler-file", str(address_file))
            deadline = time.monotonic() + 120
            while not address_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.address = json.loads(address_file.read_text())["address"]
            self._start(folder, "workers", "distributed.cli.dask_worker", self.address, "--nworkers", "2",
                        "--nthreads", "1", "--dashboard-address", ":0")
            self.client = Client(self.address, timeout=60)
            self.client.wait_for_workers(2, timeout=120)
        except BaseException:
            self.close()
            raise

    def _start(self, folder: Path, name: str, module: str, *argv: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(folder / f"{name}.log", "wb") as log:
            self.processes.append(subprocess.Popen([sys.executable, "-m", module, *argv], cwd=folder, env=env,
                                                   stdout=log, stderr=subprocess.STDOUT))

    def start(self, *argv: str, cwd: Path) -> subprocess.Popen:
        """`mmindex ARGV --profile dask` in ``cwd``, as a user runs it."""
        return subprocess.Popen([sys.executable, "-m", "mmindex", *argv, "--profile", "dask"], cwd=cwd,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "DASK_SCHEDULER": self.address},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
        process = self.start(*argv, cwd=cwd)
        out, err = process.communicate(timeout=600)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def kill_a_busy_worker(self, run: subprocess.Popen) -> str:
        """SIGKILLs the worker process running a task of the job, once another of its tasks has finished (the
        middle of the run); says when. The worker's nanny starts a new one."""
        pids = self.client.run(os.getpid)  # asked first: the kill follows the sight of a busy worker at once
        deadline = time.monotonic() + 300
        while run.poll() is None and time.monotonic() < deadline:
            tasks = self.client.run_on_scheduler(lambda dask_scheduler: [
                (ts.key, ts.state, ts.processing_on.address if ts.processing_on else None)
                for ts in dask_scheduler.tasks.values()])
            finished = sum(state == "memory" for _, state, _ in tasks)
            busy = [(key, worker) for key, state, worker in tasks if state == "processing"]
            if finished and busy:
                key, worker = busy[0]
                os.kill(pids.get(worker) or self.client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
                return f"after {finished} of {len(tasks)} tasks, while task {key} ran"
            time.sleep(0.05)
        raise AssertionError(f"the run ended before a worker could be killed: {run.communicate()}")

    def retries(self, allowed_failures: int) -> None:
        """How many times the scheduler runs a task again whose worker died (Dask's default: 3)."""
        self.client.run_on_scheduler(lambda dask_scheduler: setattr(dask_scheduler, "allowed_failures",
                                                                   allowed_failures))

    def close(self) -> None:
        if self.client is not None:
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
    """The small corpus ingested and embedded by the local executors, which give what Beam's in-process runner
    gives (tests/test_ingest_runs.py, tests/test_embed_runs.py): what the cluster must reproduce."""
    dataset = tmp_path_factory.mktemp("reference") / "dataset"
    ingest(small_corpus, dataset=dataset, extra=(SHARDS,))
    embed(dataset, str(tiny_clip), batch_size=4, threads=1, decode_workers=0)
    return dataset


def committed(dataset: Path) -> dict[str, str]:
    """Digests of shards, samples and rejects (mmindex.json holds times, so it is left out)."""
    return {k: v for k, v in file_digests(dataset).items() if k.split("/")[0] in ("shards", "samples", "rejects")}


def embed_args(dataset: str, tiny_clip: Path) -> tuple[str, ...]:
    return "embed", dataset, f"--model={tiny_clip}", "--batch-size=4", "--threads=1"


def test_the_dask_profile_names_a_runner_beam_creates_and_the_scheduler_from_the_environment(monkeypatch):
    from apache_beam.runners.dask.dask_runner import DaskRunner
    from apache_beam.runners.runner import create_runner

    monkeypatch.setenv("DASK_SCHEDULER", "tcp://scheduler.example:8786")
    options = dict(arg[2:].split("=", 1) for arg in profile_args("dask"))
    assert options["dask_client_address"] == "tcp://scheduler.example:8786"
    assert isinstance(create_runner(options["runner"]), DaskRunner)


def test_ingest_and_embed_on_a_dask_cluster_match_the_in_process_runner(cluster, small_corpus, reference, tiny_clip,
                                                                        tmp_path):
    # Relative paths, from a folder the workers do not run in: they are made absolute before the job is built,
    # and the rows record the absolute sources, as the reference's do.
    out = os.path.relpath(tmp_path / "ds", small_corpus.parent)
    done = cluster.run("ingest", "corpus", "--out", out, SHARDS, cwd=small_corpus.parent)
    assert done.returncode == 0, done.stderr
    assert "Ingested 12 samples into 3 new shards" in done.stdout
    assert "rejected 1" in done.stdout and "1 within this run" in done.stdout
    assert committed(tmp_path / "ds") == committed(reference)
    done = cluster.run(*embed_args(out, tiny_clip), cwd=small_corpus.parent)
    assert done.returncode == 0, done.stderr
    assert "Embedded 3 of 3 pending shards" in done.stdout
    assert embeddings(tmp_path / "ds", "tiny-clip") == embeddings(reference, "tiny-clip")


def test_a_worker_killed_mid_ingest_is_replaced_and_the_run_completes_the_same(cluster, small_corpus, reference,
                                                                               tmp_path):
    run = cluster.start("ingest", str(small_corpus), "--out", str(tmp_path / "ds"), SHARDS, cwd=tmp_path)
    when = cluster.kill_a_busy_worker(run)
    _, err = run.communicate(timeout=600)
    print(f"ingest: worker killed {when}")
    assert run.returncode == 0, err  # the scheduler ran the dead worker's tasks again
    assert committed(tmp_path / "ds") == committed(reference)
    assert not list((tmp_path / "ds").rglob(".tmp-*")), "no temporary file of the killed task is left behind"
    cluster.client.wait_for_workers(2, timeout=120)


def test_a_cluster_that_gives_up_after_a_killed_worker_fails_in_one_line_and_the_next_run_completes(
        cluster, reference, tiny_clip, tmp_path):
    dataset = copy_dataset(reference, tmp_path)
    shutil.rmtree(dataset / "embeddings")
    cluster.retries(0)
    try:
        run = cluster.start(*embed_args(str(dataset), tiny_clip), cwd=tmp_path)
        when = cluster.kill_a_busy_worker(run)
        _, err = run.communicate(timeout=600)
    finally:
        cluster.retries(3)
    print(f"embed: worker killed {when}")
    assert run.returncode != 0
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("Error: a cluster worker died"), err
    cluster.client.wait_for_workers(2, timeout=120)
    done = cluster.run(*embed_args(str(dataset), tiny_clip), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert embeddings(dataset, "tiny-clip") == embeddings(reference, "tiny-clip")


def test_an_index_built_on_a_dask_cluster_has_the_bytes_of_the_local_build(cluster, tmp_path):
    """The index stage's parts are made by the cluster's workers and merged by one of them into on-disk lists:
    the same index, lists and keys as the in-process build."""
    from test_index_parts import generation_digests
    from test_index_search import clustered, image_shards

    from conftest import synthetic_dataset, synthetic_space_file
    from mmindex.index.run import IndexSettings, build_indexes
    from mmindex.index.settings import BuildSettings
    from mmindex.index.store import IndexFiles

    vectors, space = clustered(12_000, 32, 60, seed=6), synthetic_space_file(tmp_path)
    stores = {name: synthetic_dataset(tmp_path / name, image_shards(vectors, 2_000)) for name in ("local", "dask")}
    build_indexes(IndexSettings(str(tmp_path / "local"), space, BuildSettings(index_type="IVF64,SQ8")))
    done = cluster.run("index", str(tmp_path / "dask"), "--model", space, "--index-type", "IVF64,SQ8", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    local = generation_digests(IndexFiles(stores["local"], "image"))
    assert "lists.ivfdata" in local and local == generation_digests(IndexFiles(stores["dask"], "image"))
    assert "IVF64,SQ8" in done.stdout and "12,000" in done.stdout
