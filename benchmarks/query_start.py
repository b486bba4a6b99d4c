#!/usr/bin/env python3
"""Wall time of one `mmindex search --image` in the offline space, from start to printed results, with the
ConSE label vectors cached and not cached, alternating in the same run.

    python benchmarks/query_start.py [--runs 3] [--workdir DIR]

Not cached is what every image query paid before the cache existed: importing transformers, loading MiniLM
and embedding the 1,000 label texts. The dataset is the demo corpus's clipart (ingested, embedded and
indexed once under --workdir).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmindex.demo import CORPUS
from mmindex.encoders.label_cache import CACHE_ENV

ROOT = Path(__file__).resolve().parents[1]


def mmindex(*args: str, cache: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), CACHE_ENV: str(cache)}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mmindex", *args], cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmindex-query-start-"))
    dataset, warm = workdir / "dataset", workdir / "cache"
    if not (dataset / "indexes").exists():
        mmindex("ingest", str(CORPUS / "clipart"), "--out", str(dataset), cache=warm)
        mmindex("embed", str(dataset), cache=warm)
        mmindex("index", str(dataset), cache=warm)
    query = ("search", "-d", str(dataset), "--image", str(CORPUS / "clipart" / "bus.png"), "-k", "3")
    mmindex(*query, cache=warm)  # the cache is filled; the files are in the page cache
    times: dict[str, list[float]] = {"not cached": [], "cached": []}
    for run in range(args.runs):
        times["not cached"].append(mmindex(*query, cache=workdir / f"empty-{run}-{time.time_ns()}"))
        times["cached"].append(mmindex(*query, cache=warm))
    print(f"`mmindex search --image`, {args.runs} runs each, alternating; {os.cpu_count()} cores")
    print("\n| label vectors | median wall s | runs (s) |\n|---|---:|---|")
    for name, seconds in times.items():
        print(f"| {name} | {statistics.median(seconds):.2f} | {', '.join(f'{s:.2f}' for s in seconds)} |")
    ratio = statistics.median(times["not cached"]) / statistics.median(times["cached"])
    print(f"\nnot cached / cached: {ratio:.1f}x")


if __name__ == "__main__":
    main()
