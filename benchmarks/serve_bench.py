"""`mmindex serve` on localhost: warm latency, throughput under concurrent clients, memory, and the CLI's cold
start for the same queries, in one run.

    python benchmarks/serve_bench.py [--dataset DATASET] [--seconds 30] [--clients 1,4,16] [--warm 50]

The dataset is --dataset, else the demo dataset built under --workdir (with `mmindex demo`) unless it is
there already. The server runs as `mmindex serve` in its own process. Then:
  1. warm latency: --warm sequential queries of each kind (text, image, audio, fused text+image) from one
     client; p50 and p99 of the client-side round trip, the server's own took_ms p50, and the server
     process's CPU time per query (all its threads: on a machine others load, the steadiest figure);
  2. throughput: 1, 4 and 16 clients (threads, one connection each) each sending text queries, then a mix
     of the four kinds, in a loop for --seconds; requests/s and errors (any status but 200, or a failed
     connection), and the server's RSS after each level;
  3. the server's RSS, sampled every 0.5 s from warm-up to the end: first, peak and last;
  4. the CLI's cold start: `mmindex search` once per kind, the way a user runs it, vs the server's p50.
Loops are bounded by --warm and --seconds. Run it under `nice` on a shared machine and say so.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "mmindex" / "demo" / "corpus"
IMAGE, AUDIO = CORPUS / "photos" / "chelsea_cat.jpg", CORPUS / "speech" / "conf_locked.wav"
TEXT = "a photo of a cat"


def queries() -> dict[str, dict]:
    image, audio = (base64.b64encode(p.read_bytes()).decode() for p in (IMAGE, AUDIO))
    return {"text": {"text": TEXT, "k": 10}, "image": {"image": image, "k": 10},
            "audio": {"audio": audio, "k": 10}, "fused": {"text": TEXT, "image": image, "k": 10}}


CLI_ARGS = {"text": [TEXT], "image": ["--image", str(IMAGE)], "audio": ["--audio", str(AUDIO)],
            "fused": [TEXT, "--image", str(IMAGE)]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: per query, a figure other load on the machine barely moves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_server(dataset: str, port: int) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "mmindex", "serve", "--dataset", f"bench={dataset}",
                                "--port", str(port)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    while process.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return process, time.perf_counter() - started
        except requests.ConnectionError:
            time.sleep(0.2)
    raise SystemExit(f"the server exited with status {process.returncode}")


def warm_latency(url: str, bodies: dict[str, dict], count: int, pid: int) -> dict[str, dict[str, float]]:
    session, figures = requests.Session(), {}
    for kind, body in bodies.items():
        session.post(url, json=body, timeout=120).raise_for_status()  # the first of a kind warms caches
        rounds, took, cpu = [], [], cpu_seconds(pid)
        for _ in range(count):
            started = time.perf_counter()
            response = session.post(url, json=body, timeout=120)
            rounds.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            took.append(response.json()["took_ms"])
        figures[kind] = {"p50": percentile(rounds, 0.5), "p99": percentile(rounds, 0.99),
                         "server_p50": statistics.median(took), "cpu_ms": (cpu_seconds(pid) - cpu) * 1000 / count}
    return figures


def throughput(url: str, mix: list[dict], clients: int, seconds: float) -> dict[str, float]:
    counts = {"ok": 0, "errors": 0}
    lock, deadline = threading.Lock(), time.monotonic() + seconds
    latencies: list[float] = []

    def client(offset: int) -> None:
        session, n = requests.Session(), offset
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                ok = session.post(url, json=mix[n % len(mix)], timeout=120).status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                counts["ok" if ok else "errors"] += 1
                latencies.append((time.perf_counter() - started) * 1000)
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"clients": clients, "requests_per_s": counts["ok"] / wall, "ok": counts["ok"],
            "errors": counts["errors"], "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def cli_cold_start(dataset: str) -> dict[str, float]:
    seconds = {}
    for kind, args in CLI_ARGS.items():
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mmindex", "search", *args, "--dataset", dataset, "-k", "10"],
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, capture_output=True)
        seconds[kind] = time.perf_counter() - started
    return seconds


def indexed_dataset(dataset: str | None, workdir: str) -> str:
    """``dataset``, else the demo dataset under ``workdir`` (built with `mmindex demo` if it is not there)."""
    if dataset:
        return dataset
    if not (Path(workdir) / "dataset" / "indexes").is_dir():
        subprocess.run([sys.executable, "-m", "mmindex", "demo", "--out", workdir], cwd=ROOT, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return str(Path(workdir) / "dataset")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="an indexed dataset (default: the demo dataset under --workdir)")
    parser.add_argument("--workdir", default="serve-bench", help="where the demo dataset is built if needed")
    parser.add_argument("--seconds", type=float, default=30.0, help="per concurrency level")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--warm", type=int, default=50, help="sequential queries per kind for latency")
    args = parser.parse_args()
    dataset = indexed_dataset(args.dataset, args.workdir)
    port = free_port()
    process, start_s = start_server(dataset, port)
    url = f"http://127.0.0.1:{port}/search"
    samples: list[float] = []
    sampling = threading.Event()

    def sample_rss() -> None:
        while not sampling.is_set():
            samples.append(rss_mb(process.pid))
            time.sleep(0.5)

    try:
        bodies = queries()
        print(f"server ready in {start_s:.1f} s (models and indexes loaded); RSS {rss_mb(process.pid):.0f} MB")
        latency = warm_latency(url, bodies, args.warm, process.pid)
        sampler = threading.Thread(target=sample_rss)
        sampler.start()
        print(f"\nwarm latency, one client, {args.warm} queries per kind (ms)")
        print(f"{'query':8} {'p50':>8} {'p99':>8} {'server p50':>11} {'server CPU/query':>16}")
        for kind, row in latency.items():
            print(f"{kind:8} {row['p50']:8.1f} {row['p99']:8.1f} {row['server_p50']:11.1f} {row['cpu_ms']:16.1f}")
        print(f"\nthroughput, {args.seconds:g} s per level; RSS of the server after each level")
        print(f"{'queries':8} {'clients':>7} {'req/s':>8} {'ok':>7} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'RSS MB':>7}")
        for name, mix in (("text", [bodies["text"]]), ("mix of 4", list(bodies.values()))):
            for clients in (int(c) for c in args.clients.split(",")):
                row = throughput(url, mix, clients, args.seconds)
                print(f"{name:8} {clients:7d} {row['requests_per_s']:8.1f} {row['ok']:7d} {row['errors']:7d} "
                      f"{row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {rss_mb(process.pid):7.0f}")
        sampling.set()
        sampler.join()
        print(f"\nserver RSS over the run (MB): first {samples[0]:.0f}, peak {max(samples):.0f}, "
              f"last {samples[-1]:.0f} ({len(samples)} samples)")
    finally:
        sampling.set()
        process.terminate()
        process.wait(timeout=30)
    cold = cli_cold_start(dataset)
    print("\nCLI cold start (`mmindex search`, one query per process) vs the warm server's p50")
    print(f"{'query':8} {'CLI s':>8} {'server ms':>10} {'ratio':>8}")
    for kind, seconds in cold.items():
        print(f"{kind:8} {seconds:8.2f} {latency[kind]['p50']:10.1f} {seconds * 1000 / latency[kind]['p50']:7.0f}x")


if __name__ == "__main__":
    main()
