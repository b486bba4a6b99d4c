"""What recording and checking checksums cost.

1. Writing an index: FAISS straight to a file (what `mmindex index` did before) against streaming it through
   the hashing atomic writer that records its size and sha256 (what it does now), same index, same disk.
2. `mmindex check` over a dataset of shard tars against a plain sha256 of the same files (the floor: check
   also parses every file).

    python benchmarks/check_bench.py [--vectors 400000] [--dim 128] [--corpus-copies 8]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmindex.dataset.checksums import Recorder
from mmindex.demo import CORPUS


def best_of(runs: int, fn) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def index_write(folder: Path, vectors: int, dim: int) -> None:
    index = faiss.IndexFlatIP(dim)
    index.add(np.random.default_rng(0).standard_normal((vectors, dim)).astype(np.float32))
    size = vectors * dim * 4 / 1e6

    def direct() -> None:
        faiss.write_index(index, str(folder / "direct.faiss"))

    def recorded() -> None:
        recorder = Recorder(str(folder), str(folder / "checksums.json"))
        with recorder.writer(str(folder / "recorded.faiss")) as out:
            faiss.write_index(index, faiss.PyCallbackIOWriter(out.write))

    plain, hashed = best_of(3, direct), best_of(3, recorded)
    same = (folder / "direct.faiss").read_bytes() == (folder / "recorded.faiss").read_bytes()
    print(f"index write, {vectors:,} x {dim} ({size:,.0f} MB): direct {plain:.2f} s, streamed + sha256 "
          f"{hashed:.2f} s ({hashed / plain:.2f}x); identical bytes: {same}")


def check_rate(folder: Path, copies: int) -> None:
    from mmindex.check.run import CheckSettings, check
    from mmindex.cli_options import ingest_settings, parse
    from mmindex.ingest.run import ingest

    corpus = folder / "corpus"
    for i in range(copies):  # distinct samples per copy: spaces appended to every caption and text
        for path in CORPUS.rglob("*"):
            if path.is_file() and path.suffix != ".json":
                target = corpus / str(i) / path.relative_to(CORPUS)
                target.parent.mkdir(parents=True, exist_ok=True)
                data = path.read_bytes()
                target.write_bytes(data + b" " * i if path.suffix == ".txt" else data)
    dataset = folder / "dataset"
    ingest(ingest_settings(parse("ingest", [str(corpus), "--out", str(dataset), "--shard-size=50"])[0])[0])
    files = [p for p in dataset.rglob("*") if p.is_file() and "checksums" not in p.parts and p.suffix != ".json"]
    total = sum(p.stat().st_size for p in files) / 1e6

    def plain() -> None:
        for path in files:
            hashlib.sha256(path.read_bytes()).hexdigest()

    floor = best_of(3, plain)
    report = None

    def checked() -> None:
        nonlocal report
        report = check(CheckSettings(str(dataset)))

    seconds = best_of(3, checked)
    print(f"check, {len(files)} files ({total:,.1f} MB, {report.files} checked, damaged: {report.damaged}): "
          f"{seconds:.2f} s = {total / seconds:,.0f} MB/s; plain sha256 of the same files {floor:.2f} s "
          f"({seconds / floor:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=400_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--corpus-copies", type=int, default=8)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="check-bench-"))
    try:
        index_write(folder, args.vectors, args.dim)
        check_rate(folder, args.corpus_copies)
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
