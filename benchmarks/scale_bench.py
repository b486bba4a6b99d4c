"""mmindex at LAION scale: import a LAION-style release, index it in-process and on a Dask cluster, search it, and
compare with exact search and autofaiss on the same vectors and memory budget, in one run.

    python benchmarks/scale_bench.py [--vectors 10000000] [--dim 384] [--per-file 1000000] [--max-memory 1GB]
                                     [--autofaiss-python PATH] [--workdir DIR]

1. Writes --vectors clustered unit vectors (1,000 centres plus noise, normalised, a fixed seed) in LAION's layout:
   img_emb/img_emb_NNNN.npy (float16, --per-file rows each) beside metadata/metadata_NNNN.parquet (key, caption,
   url; row for row), and 1,000 fresh queries (the same centres, other draws: never in the data). Files already
   written in --workdir for the same settings are reused.
2. `mmindex import img_emb --metadata metadata --key-column key --out DATASET --model scale-bench` (a new space of
   vectors only): wall time and peak RSS.
3. `mmindex index DATASET --model scale-bench --max-memory BUDGET`, in-process: build time and peak RSS.
4. The same build on a Dask cluster (a scheduler and `--nworkers 2 --nthreads 1` worker processes on localhost, as
   tests/test_dask.py starts them) into a copy of the dataset without its index, with `--profile dask`: peak RSS
   of the driver and of each worker process, and whether the published generation's files (all but info.json and
   checksums.json, which hold times) are byte-identical to the in-process build's. A checkout whose `mmindex
   index` does not take --profile yet prints that the Dask build is not available and goes on.
5. Exact search (FAISS IndexFlatIP, block by block, so its memory stays bounded) gives the true ten nearest of
   each query and exact queries/s (one batch of 1,000, including reading and widening the float16 files). The
   built index is loaded as mmindex loads it (`IndexFiles.load`) in a process of its own: recall@10, queries/s
   for the same batch, warm per-query latency (100 single queries after a warm-up), and that process's peak
   (VmHWM) and current RSS. Cold latency: one whole `mmindex search --vectors q1.npy` process (3 runs), and a
   10-query `--vectors` batch (per extra query, captions included: few, as each reads its hits' samples).
6. The index's bytes on disk (every file of the published generation).
7. autofaiss (`build_index` on the img_emb folder, the same budget in bytes, k=10) in the virtual environment of
   --autofaiss-python: build time, peak RSS, recall@10, queries/s, index bytes. Skipped, with a line, when that
   interpreter cannot import autofaiss (set one up: `python3 -m venv /tmp/autofaiss-venv &&
   /tmp/autofaiss-venv/bin/pip install autofaiss faiss-cpu==1.8.0 'pyarrow<20' packaging`; see index_bench.py).

It prints a Markdown table, the lines around it, and PASS/FAIL (or NOT RUN) for the targets of issue 18: every
mmindex process's peak RSS <= 1.5 GB; recall@10 >= 0.90 at >= 50x exact search's queries/s; build time <= half
autofaiss's; the Dask build byte-identical to the in-process one; a search process's RSS <= 1 GB.

Every contender runs in its own process, so its peak memory is its own. Peak RSS is the kernel's (wait4's
ru_maxrss, VmHWM); it counts the pages of memory-mapped files a process touched (the embeddings read to train,
add and re-rank), so the largest anonymous and file-backed RSS sampled every 0.2 s are printed beside it. The
`mmindex` build time is the whole command's wall time (start-up included); autofaiss's is its build_index call.
mmindex runs from this checkout (PYTHONPATH), also on the cluster's workers; MB and GB are 10^6 and 10^9 bytes.
At the defaults the input takes about 8 GB of disk and the imported dataset about 30 GB more (its float16 vectors,
and a tar of about 2 KB per row); the Dask build's copy hard-links them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]   # the checkout: mmindex is imported from here, on the workers too
SPACE = "scale-bench"
MODALITY = "image"
K = 10
QUERIES = 1_000
WARM_QUERIES = 100
CLI_BATCH = 10                       # queries of the timed `mmindex search --vectors` batch
CENTRES = 1_000
NOISE = 0.35
SEED = 0
WRITE_ROWS = 100_000                 # vectors drawn and written at a time
EXACT_BLOCK_BYTES = 256 * 10**6      # float32 vectors exact search holds at a time
SAMPLE_EVERY = 0.2                   # seconds between memory samples
AUTOFAISS_RAM = "16G"                # what autofaiss may use to build (as index_bench.py gives it)
MB, GB = 10**6, 10**9
TARGET_RSS = 1.5 * GB
TARGET_SEARCH_RSS = 1 * GB
TARGET_RECALL = 0.90
TARGET_SPEEDUP = 50
TARGET_BUILD_RATIO = 0.5
SKIP_COMPARE = {"info.json", "checksums.json", ".readers"}  # times, their digests, and the readers' lock


@dataclass(frozen=True)
class Layout:
    """Where one run's files are: the LAION-style input (kept between runs) and what the run makes."""

    data: Path

    @property
    def img_emb(self) -> Path:
        return self.data / "img_emb"

    @property
    def metadata(self) -> Path:
        return self.data / "metadata"

    @property
    def queries(self) -> Path:
        return self.data / "queries.npy"

    @property
    def truth(self) -> Path:
        return self.data / "truth.npy"

    @property
    def written(self) -> Path:
        return self.data / "written.json"   # last: the input is complete

    @property
    def dataset(self) -> Path:
        return self.data / "dataset"

    @property
    def dask_dataset(self) -> Path:
        return self.data / "dataset-dask"

    @property
    def cluster(self) -> Path:
        return self.data / "cluster"

    @property
    def autofaiss(self) -> Path:
        return self.data / "autofaiss"


# --- the input: LAION's layout ---------------------------------------------------------------------------------

def clustered(n: int, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), n)] + NOISE * rng.standard_normal((n, centres.shape[1]),
                                                                                      dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_input(layout: Layout, n: int, dim: int, per_file: int) -> None:
    """The vectors and metadata files, and the held-out queries; nothing when they are already there."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    settings = {"vectors": n, "dim": dim, "per_file": per_file, "seed": SEED}
    if layout.written.exists() and json.loads(layout.written.read_text()) == settings:
        print(f"reusing the input in {layout.data}", flush=True)
        return
    shutil.rmtree(layout.data, ignore_errors=True)
    layout.img_emb.mkdir(parents=True)
    layout.metadata.mkdir()
    centres = np.random.default_rng(SEED).standard_normal((CENTRES, dim), dtype=np.float32)
    started = time.perf_counter()
    for number, first in enumerate(range(0, n, per_file)):
        rows = min(per_file, n - first)
        rng = np.random.default_rng([SEED, number])   # each file its own stream: the same bytes in any run
        out = np.lib.format.open_memmap(layout.img_emb / f"img_emb_{number:04d}.npy", "w+", np.float16, (rows, dim))
        for start in range(0, rows, WRITE_ROWS):
            out[start:start + WRITE_ROWS] = clustered(min(WRITE_ROWS, rows - start), centres, rng)
        out.flush()
        del out
        ids = range(first, first + rows)
        table = pa.table({"key": [f"{i:011d}" for i in ids], "caption": [f"synthetic vector {i}" for i in ids],
                          "url": [f"https://example.com/{i}.jpg" for i in ids]})
        pq.write_table(table, layout.metadata / f"metadata_{number:04d}.parquet")
    queries = clustered(QUERIES, centres, np.random.default_rng([SEED, 1 << 30]))  # a stream no file draws from
    np.save(layout.queries, queries.astype(np.float32))
    layout.written.write_text(json.dumps(settings))
    print(f"wrote {n:,} vectors in {-(-n // per_file)} files in {time.perf_counter() - started:.0f} s", flush=True)


# --- memory: the kernel's peak, and samples of anonymous and file-backed RSS ------------------------------------

@dataclass
class Peak:
    hwm: int = 0    # bytes: the kernel's peak RSS (VmHWM, or wait4's ru_maxrss)
    anon: int = 0   # the largest RssAnon sampled
    file: int = 0   # the largest RssFile sampled (touched pages of memory-mapped files)

    def merge(self, other: Peak) -> Peak:
        return Peak(max(self.hwm, other.hwm), max(self.anon, other.anon), max(self.file, other.file))

    def __str__(self) -> str:
        return f"{self.hwm / MB:,.0f} MB (anon {self.anon / MB:,.0f}, file-backed {self.file / MB:,.0f})"


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon and RssFile of a process, in bytes ({} once it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


class Sampler:
    """Samples the memory of the processes ``pids`` names every 0.2 s on a thread, keeping each one's peak."""

    def __init__(self, pids: Callable[[], Iterable[int]]):
        self.pids, self.peaks = pids, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY):
            self.sample()

    def sample(self) -> None:
        for pid in self.pids():
            status = proc_status(pid)
            if status:
                seen = Peak(status.get("VmHWM", 0), status.get("RssAnon", 0), status.get("RssFile", 0))
                self.peaks[pid] = self.peaks.get(pid, Peak()).merge(seen)

    def stop(self) -> dict[int, Peak]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def tree(pid: int) -> list[int]:
    """A process and its descendants, as they are now."""
    import psutil

    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak: Peak

    def json(self) -> dict[str, Any]:
        if self.returncode:
            raise RuntimeError(f"exit status {self.returncode}:\n{self.stderr[-3000:]}")
        return json.loads(self.stdout.strip().splitlines()[-1])


# Runs its arguments and reports their peak RSS. The kernel's ru_maxrss of a process started from this one counts
# this process's own peak (taken over at exec): every command measured after a big step showed that step's peak.
# Started from this small process instead, a command's ru_maxrss is its own.
PEAK_OF = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print(f'maxrss_kb={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); "
           "sys.exit(code)")


def run_measured(command: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> Measured:
    """Runs ``command`` to its end: its wall time, output, and peak memory (its own and its children's)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-c", PEAK_OF, *command], cwd=cwd, env=env, stdout=out,
                                   stderr=err)
        sampler = Sampler(lambda: tree(process.pid)[1:])  # the command and its children, not the wrapper
        process.wait()
        seconds = time.perf_counter() - started
        sampled = sampler.stop().values()
        out.seek(0)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
        lines = stderr.rstrip().splitlines()
        reported = int(lines[-1].removeprefix("maxrss_kb=")) if lines and lines[-1].startswith("maxrss_kb=") else 0
        peak = Peak(reported * 1024)
        for seen in sampled:
            peak = peak.merge(seen)
        return Measured(process.returncode, out.read().decode(errors="replace"), "\n".join(lines[:-1]), seconds, peak)


def checkout_env(**extra: str) -> dict[str, str]:
    """This environment with the checkout first on PYTHONPATH: every process imports mmindex from it."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def mmindex(*argv: str) -> list[str]:
    return [sys.executable, "-m", "mmindex", *argv]


# --- the contenders that run in processes of their own (--one) ---------------------------------------------------

def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def one_exact(layout: Layout) -> dict[str, Any]:
    """Exact search block by block over the input files (float16 widened to float32 a block at a time): writes
    the true ten nearest of each query (global row numbers) and times the whole batch."""
    import faiss

    queries = np.load(layout.queries)
    best_scores = np.full((len(queries), K), -np.inf, np.float32)
    best_ids = np.full((len(queries), K), -1, np.int64)
    rows = max(K, EXACT_BLOCK_BYTES // (4 * queries.shape[1]))
    offset = 0
    started = time.perf_counter()
    for path in sorted(layout.img_emb.glob("img_emb_*.npy")):
        vectors = np.load(path, mmap_mode="r")
        for start in range(0, len(vectors), rows):
            flat = faiss.IndexFlatIP(queries.shape[1])
            flat.add(np.ascontiguousarray(vectors[start:start + rows], np.float32))
            scores, ids = flat.search(queries, K)
            ids = np.where(ids >= 0, ids + offset + start, -1)
            both_scores, both_ids = np.hstack([best_scores, scores]), np.hstack([best_ids, ids])
            order = np.argsort(-both_scores, axis=1, kind="stable")[:, :K]
            best_scores, best_ids = np.take_along_axis(both_scores, order, 1), np.take_along_axis(both_ids, order, 1)
        offset += len(vectors)
        del vectors  # unmapped: its pages leave this process's RSS
    seconds = time.perf_counter() - started
    np.save(layout.truth, best_ids)
    return {"seconds": round(seconds, 2), "queries_per_s": round(len(queries) / seconds, 1), "vectors": offset}


def one_search(layout: Layout, dataset: Path) -> dict[str, Any]:
    """The built index loaded as mmindex loads it (memory-mapped, tuned settings, keys): recall@10 and
    queries/s on the fresh queries, warm single-query latency, and this process's RSS."""
    from mmindex.dataset.embeddings import EmbeddingStore, dataset_space
    from mmindex.index.searchable import describe_search
    from mmindex.index.store import IndexFiles

    queries, truth = np.load(layout.queries), np.load(layout.truth)
    before = proc_status()
    started = time.perf_counter()
    files = IndexFiles(EmbeddingStore.of(str(dataset), dataset_space(str(dataset), SPACE)), MODALITY)
    index, keys, _ = files.load()
    load_s = time.perf_counter() - started
    loaded = proc_status()
    started = time.perf_counter()
    _, ids = index.search(queries, K)
    seconds = time.perf_counter() - started
    found = np.array([[int(keys[i]) if i >= 0 else -1 for i in row] for row in ids])  # keys are global rows
    for query in queries[-10:]:  # warm-up
        index.search(query[None], K)
    latencies = []
    for query in queries[:WARM_QUERIES]:
        started = time.perf_counter()
        _, ids = index.search(query[None], K)
        _ = [keys[i] for i in ids[0] if i >= 0]
        latencies.append(time.perf_counter() - started)
    after = proc_status()
    info = files.info()
    return {"type": info["type"], "parameters": describe_search(info), "own_recall": info["recall_at_10"],
            "build_seconds": info["build_seconds"], "load_s": round(load_s, 2),
            "recall_at_10": round(recall_at_k(found, truth), 4), "queries_per_s": round(len(queries) / seconds, 1),
            "warm_ms_p50": round(float(np.percentile(latencies, 50)) * 1000, 2),
            "warm_ms_p95": round(float(np.percentile(latencies, 95)) * 1000, 2),
            "rss_before_load": before["VmRSS"], "rss_after_load": loaded["VmRSS"], "rss_now": after["VmRSS"],
            "anon_now": after["RssAnon"], "file_now": after["RssFile"], "hwm": after["VmHWM"]}


def one_autofaiss(layout: Layout, budget_bytes: int) -> dict[str, Any]:
    """autofaiss on the input folder, in its own environment (numpy, faiss and autofaiss only: no mmindex)."""
    from autofaiss import build_index

    layout.autofaiss.mkdir(exist_ok=True)
    index_path = layout.autofaiss / "knn.index"
    queries, truth = np.load(layout.queries), np.load(layout.truth)
    started = time.perf_counter()
    index, info = build_index(embeddings=str(layout.img_emb), index_path=str(index_path),
                              index_infos_path=str(layout.autofaiss / "infos.json"), save_on_disk=True,
                              max_index_memory_usage=f"{budget_bytes}B", current_memory_available=AUTOFAISS_RAM,
                              metric_type="ip", min_nearest_neighbors_to_retrieve=K, verbose=40)
    build = time.perf_counter() - started
    started = time.perf_counter()
    _, found = index.search(queries, K)   # ids are rows of the files in name order, as the truth's
    seconds = time.perf_counter() - started
    return {"type": info.get("index_key"), "parameters": info.get("index_param"), "build_s": round(build, 1),
            "recall_at_10": round(recall_at_k(found, truth), 4), "queries_per_s": round(len(queries) / seconds, 1),
            "bytes": index_path.stat().st_size}


# --- the Dask cluster ----------------------------------------------------------------------------------------------

class Cluster:
    """A dask.distributed scheduler and two single-threaded worker processes (each under a nanny) on localhost,
    started in ``folder`` (their logs go there) with this checkout on their PYTHONPATH; samples the memory of
    every process under the workers' command from the start."""

    def __init__(self, folder: Path):
        from distributed import Client

        folder.mkdir(parents=True, exist_ok=True)
        self.processes: list[subprocess.Popen] = []
        self.client = None
        self.sampler: Sampler | None = None
        address_file = folder / "scheduler.json"
        address_file.unlink(missing_ok=True)
        try:
            self._start(folder, "scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                        "--dashboard-address", ":0", "--scheduler-file", str(address_file))
            deadline = time.monotonic() + 120
            while not address_file.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.address = json.loads(address_file.read_text())["address"]
            launcher = self._start(folder, "workers", "distributed.cli.dask_worker", self.address, "--nworkers", "2",
                                   "--nthreads", "1", "--dashboard-address", ":0")
            self.sampler = Sampler(lambda: tree(launcher.pid))
            self.client = Client(self.address, timeout=60)
            self.client.wait_for_workers(2, timeout=120)
            self.workers = set(self.client.run(os.getpid).values())
        except BaseException:
            self.close()
            raise

    def _start(self, folder: Path, name: str, module: str, *argv: str) -> subprocess.Popen:
        with open(folder / f"{name}.log", "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=folder, env=checkout_env(),
                                       stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def worker_peaks(self) -> dict[int, Peak]:
        """Each worker process's peak (with its children's), read before the cluster closes; a worker that a
        nanny replaced is there too, as last sampled."""
        self.workers |= set(self.client.run(os.getpid).values())
        peaks = self.sampler.stop()
        self.sampler = None
        result = {}
        for pid in self.workers:
            peak = peaks.get(pid, Peak())
            for child in tree(pid)[1:]:
                peak = peak.merge(peaks.get(child, Peak()))
            result[pid] = peak
        return result

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.client is not None:
            self.client.close()
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class DaskBuild:
    available: bool
    measured: Measured | None = None
    workers: dict[int, Peak] = field(default_factory=dict)
    error: str | None = None


def copy_without_index(source: Path, target: Path) -> None:
    """A copy of the dataset without indexes/: its committed shard files (vectors, tars, parquet), which nothing
    rewrites, hard-linked (at 10M rows they are tens of GB); the records (JSON) copied."""
    def link_or_copy(src: str, dst: str) -> None:
        if src.endswith((".npy", ".tar", ".parquet")):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=link_or_copy,
                    ignore=lambda folder, names: ["indexes"] if Path(folder) == source else [])


def dask_build(layout: Layout, budget: str) -> DaskBuild:
    copy_without_index(layout.dataset, layout.dask_dataset)
    try:
        cluster = Cluster(layout.cluster)
    except Exception as err:  # dask.distributed missing, or a cluster that did not come up
        return DaskBuild(True, error=f"the cluster did not start ({type(err).__name__}: {err})")
    try:
        measured = run_measured(mmindex("index", str(layout.dask_dataset), "--model", SPACE, "--max-memory", budget,
                                        "--profile", "dask"),
                                cwd=layout.data, env=checkout_env(DASK_SCHEDULER=cluster.address))
        workers = cluster.worker_peaks()
    finally:
        cluster.close()
    if measured.returncode == 2 and ("No such option" in measured.stderr or "Usage:" in measured.stderr):
        return DaskBuild(False, measured)
    if measured.returncode:
        return DaskBuild(True, measured, workers, measured.stderr.strip().splitlines()[-1])
    return DaskBuild(True, measured, workers)


# --- the published generation --------------------------------------------------------------------------------------

def generation(dataset: Path) -> Path:
    folder = dataset / "indexes" / SPACE / MODALITY
    return folder / (folder / "CURRENT").read_text().strip()


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of a generation but those that hold times."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.iterdir()) if path.is_file() and path.name not in SKIP_COMPARE}


def bytes_on_disk(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


# --- the run ----------------------------------------------------------------------------------------------------

def one(python: str, what: str, layout: Layout, *argv: str) -> Measured:
    """This script in a process of its own, running one contender (--one)."""
    return run_measured([python, __file__, "--one", what, "--data", str(layout.data), *argv], cwd=layout.data,
                        env=checkout_env())


def timed_search(layout: Layout, queries: Path) -> Measured:
    done = run_measured(mmindex("search", "--vectors", str(queries), "--dataset", str(layout.dataset), "--model",
                                SPACE, "--json"), cwd=layout.data, env=checkout_env())
    if done.returncode:
        raise RuntimeError(f"mmindex search failed:\n{done.stderr[-3000:]}")
    return done


def imports_autofaiss(python: str) -> bool:
    try:
        return not subprocess.run([python, "-c", "import autofaiss"], capture_output=True).returncode
    except OSError:  # no such interpreter
        return False


def mb(size: float) -> str:
    return f"{size / MB:,.0f}"


def verdict(ok: bool | None, why: str) -> str:
    return f"{'NOT RUN' if ok is None else 'PASS' if ok else 'FAIL'}: {why}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--per-file", type=int, default=1_000_000, help="rows per img_emb/metadata file")
    parser.add_argument("--max-memory", default="1GB", help="the index's memory budget, for mmindex and autofaiss")
    parser.add_argument("--autofaiss-python", default=sys.executable,
                        help="the interpreter of a virtual environment with autofaiss (default: this one)")
    parser.add_argument("--workdir", type=Path, help="where the input and the datasets go (default: a new temp dir)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        layout = Layout(args.data)
        result = {"exact": lambda: one_exact(layout), "search": lambda: one_search(layout, args.dataset),
                  "autofaiss": lambda: one_autofaiss(layout, args.budget_bytes)}[args.one]()
        print(json.dumps(result))
        return

    sys.path.insert(0, str(ROOT))
    from mmindex.sizes import parse_size

    budget = args.max_memory
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="mmindex-scale-bench-"))).resolve()
    layout = Layout(workdir / f"laion-{args.vectors}x{args.dim}-{args.per_file}")
    write_input(layout, args.vectors, args.dim, args.per_file)
    for made in (layout.dataset, layout.dask_dataset, layout.autofaiss):
        shutil.rmtree(made, ignore_errors=True)
    layout.truth.unlink(missing_ok=True)
    print(f"{args.vectors:,} clustered unit vectors of dimension {args.dim} in {layout.data}, budget {budget}\n",
          flush=True)

    exact = one(sys.executable, "exact", layout)
    exact_result = exact.json()
    exact_qps = exact_result["queries_per_s"]
    print(f"exact search: {exact_result['seconds']} s for {QUERIES:,} queries, peak RSS {exact.peak}", flush=True)

    imported = run_measured(mmindex("import", str(layout.img_emb), "--metadata", str(layout.metadata),
                                    "--key-column", "key", "--out", str(layout.dataset), "--model", SPACE,
                                    "--modality", MODALITY), cwd=layout.data, env=checkout_env())
    if imported.returncode:
        raise RuntimeError(f"mmindex import failed:\n{imported.stderr[-3000:]}")
    print(f"import: {imported.seconds:.1f} s, peak RSS {imported.peak}", flush=True)

    local = run_measured(mmindex("index", str(layout.dataset), "--model", SPACE, "--max-memory", budget),
                         cwd=layout.data, env=checkout_env())
    if local.returncode:
        raise RuntimeError(f"mmindex index failed:\n{local.stderr[-3000:]}")
    print(f"in-process build: {local.seconds:.1f} s, peak RSS {local.peak}", flush=True)
    search = one(sys.executable, "search", layout, "--dataset", str(layout.dataset))
    found = search.json()
    local_bytes = bytes_on_disk(generation(layout.dataset))

    dask = dask_build(layout, budget)
    identical: bool | None = None   # None: no Dask build to compare
    differing: list[str] = []
    dask_found: dict[str, Any] | None = None
    if not dask.available:
        print("dask build: not available in this checkout", flush=True)
    elif dask.error:
        print(f"dask build failed: {dask.error}", flush=True)
    else:
        ours, theirs = digests(generation(layout.dataset)), digests(generation(layout.dask_dataset))
        identical = ours == theirs
        differing = sorted(name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name))
        print(f"dask build: {dask.measured.seconds:.1f} s, driver peak RSS {dask.measured.peak}; workers: "
              + "; ".join(f"pid {pid} {peak}" for pid, peak in sorted(dask.workers.items())), flush=True)
        if not identical:
            dask_found = one(sys.executable, "search", layout, "--dataset", str(layout.dask_dataset)).json()

    has_autofaiss = imports_autofaiss(args.autofaiss_python)
    auto: Measured | None = None
    auto_found: dict[str, Any] | None = None
    if has_autofaiss:
        auto = one(args.autofaiss_python, "autofaiss", layout, f"--budget-bytes={parse_size(budget)}")
        auto_found = auto.json()
        print(f"autofaiss: {auto_found['build_s']} s, peak RSS {auto.peak}", flush=True)
    else:
        print(f"autofaiss: skipped ({args.autofaiss_python} cannot import autofaiss)", flush=True)

    single = layout.data / "q1.npy"
    np.save(single, np.load(layout.queries)[:1])
    batch = layout.data / f"q{CLI_BATCH}.npy"
    np.save(batch, np.load(layout.queries)[:CLI_BATCH])
    cold = [timed_search(layout, single) for _ in range(3)]
    batched = timed_search(layout, batch)

    def label(result: dict[str, Any]) -> str:
        return f"{result['type']} ({result['parameters']})" if result.get("parameters") else str(result["type"])

    print(f"\n{args.vectors:,} vectors x {args.dim}, {-(-args.vectors // args.per_file)} files, budget {budget}, "
          f"{QUERIES:,} fresh queries, k={K}\n")
    print("| contender | index | build s | peak RSS MB (driver / workers) | recall@10 | queries/s | vs exact q/s "
          "| index bytes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print(f"| exact (FAISS Flat, blocked) | Flat | | {mb(exact.peak.hwm)} | 1.000 | {exact_qps:,.0f} | 1.0x | |")
    print(f"| `mmindex index` (in-process) | {label(found)} | {local.seconds:.1f} | {mb(local.peak.hwm)} | "
          f"{found['recall_at_10']:.3f} | {found['queries_per_s']:,.0f} | {found['queries_per_s'] / exact_qps:.1f}x | "
          f"{local_bytes:,} |")
    if not dask.available:
        print("| `mmindex index --profile dask` | (not available in this checkout) | | | | | | |")
    elif dask.error:
        print(f"| `mmindex index --profile dask` | (failed: {dask.error}) | | | | | | |")
    else:
        shown = dask_found or found
        workers = " + ".join(mb(peak.hwm) for _, peak in sorted(dask.workers.items()))
        print(f"| `mmindex index --profile dask` (2 workers) | {label(shown)} | {dask.measured.seconds:.1f} | "
              f"{mb(dask.measured.peak.hwm)} / {workers} | {shown['recall_at_10']:.3f} | "
              f"{shown['queries_per_s']:,.0f} | {shown['queries_per_s'] / exact_qps:.1f}x | "
              f"{bytes_on_disk(generation(layout.dask_dataset)):,} |")
    if auto_found is not None:
        print(f"| autofaiss `build_index` | {label(auto_found)} | {auto_found['build_s']} | {mb(auto.peak.hwm)} | "
              f"{auto_found['recall_at_10']:.3f} | {auto_found['queries_per_s']:,.0f} | "
              f"{auto_found['queries_per_s'] / exact_qps:.1f}x | {auto_found['bytes']:,} |")
    else:
        print("| autofaiss `build_index` | (not installed) | | | | | | |")

    print(f"\nimport: {imported.seconds:.1f} s ({args.vectors / imported.seconds:,.0f} vectors/s), peak RSS "
          f"{imported.peak}")
    print(f"in-process build: {local.seconds:.1f} s whole command ({found['build_seconds']} s recorded in info.json), "
          f"peak RSS {local.peak}; its own recall estimate {found['own_recall']}")
    if dask.available and not dask.error:
        print(f"dask build: driver peak RSS {dask.measured.peak}")
        for pid, peak in sorted(dask.workers.items()):
            print(f"  worker pid {pid}: peak RSS {peak}")
        print(f"dask build byte-identical to the in-process one (every file but {', '.join(sorted(SKIP_COMPARE))}): "
              f"{'yes' if identical else 'NO, differing: ' + ', '.join(differing)}")
    else:
        print("dask build byte-identical to the in-process one: not measured (no dask build)")
    print(f"search process: load {found['load_s']} s; RSS {mb(found['rss_before_load'])} MB before loading, "
          f"{mb(found['rss_after_load'])} MB after, {mb(found['rss_now'])} MB after the queries (anon "
          f"{mb(found['anon_now'])}, file-backed {mb(found['file_now'])}); peak (VmHWM) {mb(found['hwm'])} MB")
    print(f"warm latency, single queries in one process (index search + keys): p50 {found['warm_ms_p50']} ms, "
          f"p95 {found['warm_ms_p95']} ms over {WARM_QUERIES}")
    cold_s = [c.seconds for c in cold]
    print(f"cold `mmindex search --vectors q1.npy` (whole process): {', '.join(f'{s:.2f}' for s in cold_s)} s, "
          f"peak RSS {max(c.peak.hwm for c in cold) / MB:,.0f} MB")
    print(f"`mmindex search --vectors` with {CLI_BATCH} queries: {batched.seconds:.2f} s, "
          f"{(batched.seconds - min(cold_s)) / (CLI_BATCH - 1) * 1000:.1f} ms per extra query (captions included), "
          f"peak RSS {batched.peak}")
    if auto_found is not None:
        print(f"build time vs autofaiss: {local.seconds:.1f} / {auto_found['build_s']} s = "
              f"{local.seconds / auto_found['build_s']:.2f}")

    processes = {"import": imported.peak.hwm, "in-process build": local.peak.hwm, "search process": found["hwm"],
                 "cold search CLI": max(c.peak.hwm for c in cold), f"{CLI_BATCH}-query search CLI": batched.peak.hwm}
    if dask.available and not dask.error:
        processes["dask driver"] = dask.measured.peak.hwm
        processes.update({f"dask worker {pid}": peak.hwm for pid, peak in dask.workers.items()})
    largest = max(processes, key=processes.__getitem__)
    speedup = found["queries_per_s"] / exact_qps
    search_rss = max(found["hwm"], processes["cold search CLI"])
    print("\nTargets:")
    print(verdict(processes[largest] <= TARGET_RSS, f"every mmindex process's peak RSS <= {TARGET_RSS / GB} GB "
                  f"(largest: {largest}, {mb(processes[largest])} MB)"))
    print(verdict(found["recall_at_10"] >= TARGET_RECALL and speedup >= TARGET_SPEEDUP,
                  f"recall@10 >= {TARGET_RECALL} at >= {TARGET_SPEEDUP}x exact q/s "
                  f"({found['recall_at_10']:.3f} at {speedup:.1f}x)"))
    print(verdict(None if auto_found is None else local.seconds <= TARGET_BUILD_RATIO * auto_found["build_s"],
                  f"build time <= {TARGET_BUILD_RATIO} x autofaiss's "
                  + (f"({local.seconds:.1f} vs {auto_found['build_s']} s)" if auto_found else "(autofaiss not run)")))
    print(verdict(identical, "the Dask build byte-identical to the in-process one"
                  + ("" if dask.available and not dask.error else " (no dask build)")))
    print(verdict(search_rss <= TARGET_SEARCH_RSS, f"a search process's RSS <= {TARGET_SEARCH_RSS / GB:.0f} GB "
                  f"(peak {mb(search_rss)} MB: bench process {mb(found['hwm'])}, cold CLI "
                  f"{mb(processes['cold search CLI'])})"))


if __name__ == "__main__":
    main()
