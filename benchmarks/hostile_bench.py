"""`mmindex serve` under attack on localhost: what a normal client sees while hostile clients hold connections
or the models.

    python benchmarks/hostile_bench.py [--dataset DATASET] [--seconds 15] [--code ROOT]

The server runs as `mmindex serve` (from the source tree --code, default this one, so an older tree can be
measured the same way) over --dataset, else the demo dataset under --workdir (built if needed). A normal client
connects from 127.0.0.2 and sends a short text query to /search every 50 ms, reconnecting when a connection
fails; attackers connect from 127.0.0.1 and, for the heavy queries, from 16 addresses of their own. Each phase
lasts --seconds:
  1. none: the normal client alone;
  2. idle: 1,000 connections that send nothing (each reopened when the server closes it);
  3. slowloris: 300 connections that send a request's headers one byte a second;
  4. slow upload: 100 connections that POST /search a 1 MB body at 100 bytes a second;
  5. heavy: 16 clients sending the largest text allowed (64 KiB, in a script that takes the multilingual
     path) to /knn-service in a loop.
An attacker reopens a connection the server closed a second later. For each: the normal client's p50 and
p99 round trip and its errors (any status but 200, or a failed connection), the connections to the server's
port established at the end of the attack (from /proc/net/tcp: accepted or waiting to be), and the server's
RSS (peak of samples every 0.5 s). Only 127.0.0.0/8 is reached; every loop is bounded by --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from serve_bench import free_port, indexed_dataset, percentile, rss_mb

ROOT = Path(__file__).resolve().parents[1]
QUERY = json.dumps({"text": "a photo of a cat", "k": 10}).encode()
HEAVY = json.dumps({"text": "猫" * 21_845, "indice_name": "bench", "modality": "image", "num_images": 10}).encode()


def start(code: Path, dataset: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "mmindex", "serve", "--dataset", f"bench={dataset}", "--port",
                                str(port)], cwd=code, env={**os.environ, "PYTHONPATH": str(code)})
    while process.poll() is None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not start (exit status {process.returncode})")


def normal_client(port: int, until: float) -> tuple[list[float], int]:
    """Round trips (s) of the normal client's queries, and its errors."""
    times, errors, connection = [], 0, None
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.2", 0))
            connection.request("POST", "/search", QUERY, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
                connection.close()
                connection = None
            else:
                times.append(time.monotonic() - started)
        except OSError:
            errors += 1
            connection = None
        time.sleep(0.05)
    return times, errors


def established(port: int) -> int:
    """Connections to ``port`` the kernel holds established now (the server's ends)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "01")


async def hold(port: int, count: int, until: float, opening: bytes, drip: bytes, every: float,
               source: str = "127.0.0.1") -> int:
    """``count`` connections that send ``opening`` and then ``drip`` every ``every`` seconds, each reopened a
    second after the server closes it; the connections established at the end."""
    async def one() -> None:
        while time.monotonic() < until:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
            except OSError:
                await asyncio.sleep(1)
                continue
            try:
                writer.write(opening)
                while time.monotonic() < until and not reader.at_eof():
                    if drip:
                        writer.write(drip)
                        await writer.drain()
                    try:
                        if await asyncio.wait_for(reader.read(4096), every) == b"":
                            break
                    except asyncio.TimeoutError:
                        pass
            except OSError:
                pass
            finally:
                writer.close()
            await asyncio.sleep(1)

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    await asyncio.sleep(max(0.0, until - time.monotonic() - 0.5))
    still = established(port)
    await asyncio.gather(*tasks, return_exceptions=True)
    return still


def heavy_clients(port: int, until: float, clients: int = 16) -> int:
    """Clients sending the largest allowed text to /knn-service; the requests they completed."""
    done = [0]

    def loop(n: int) -> None:
        connection = None
        while time.monotonic() < until:
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60,
                                                            source_address=(f"127.0.4.{n + 1}", 0))
                connection.request("POST", "/knn-service", HEAVY, {"Content-Type": "application/json"})
                connection.getresponse().read()
                done[0] += 1
            except OSError:
                connection = None
                time.sleep(0.1)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0]


def attack(name: str, port: int, until: float) -> str:
    slow_headers = b"GET /info HTTP/1.1\r\nHost: x\r\n"
    upload = (b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n"
              b"\r\n{\"text\": \"")
    if name == "idle":
        return f"{asyncio.run(hold(port, 1000, until, b'', b'', 1.0))} connections at the end"
    if name == "slowloris":
        return f"{asyncio.run(hold(port, 300, until, slow_headers, b'X', 1.0))} connections at the end"
    if name == "slow upload":
        return f"{asyncio.run(hold(port, 100, until, upload, b'x' * 100, 1.0))} connections at the end"
    if name == "heavy":
        return f"{heavy_clients(port, until)} heavy queries answered"
    time.sleep(max(0.0, until - time.monotonic()))
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", help="an indexed dataset (default: the demo dataset under --workdir)")
    parser.add_argument("--workdir", default="serve-bench", help="where the demo dataset is built if needed")
    parser.add_argument("--seconds", type=float, default=15.0, help="per attack")
    parser.add_argument("--code", type=Path, default=ROOT, help="the source tree whose server is measured")
    args = parser.parse_args()
    dataset = indexed_dataset(args.dataset, args.workdir)
    port = free_port()
    process = start(args.code.resolve(), dataset, port)
    print(f"{'attack':12} {'p50 ms':>8} {'p99 ms':>8} {'queries':>8} {'errors':>7} {'RSS MB':>7}  attackers")
    try:
        for name in ("none", "idle", "slowloris", "slow upload", "heavy"):
            until = time.monotonic() + args.seconds
            peak, result = [rss_mb(process.pid)], {}
            thread = threading.Thread(target=lambda r=result, n=name, u=until: r.update(attack=attack(n, port, u)))
            thread.start()
            time.sleep(0.5)   # the attack is under way
            measured = threading.Thread(target=lambda r=result, u=until: r.update(normal=normal_client(port, u)))
            measured.start()
            while measured.is_alive() or thread.is_alive():
                peak.append(rss_mb(process.pid))
                time.sleep(0.5)
            times, errors = result["normal"]
            p50, p99 = (percentile(times, q) * 1000 if times else float("nan") for q in (0.5, 0.99))
            print(f"{name:12} {p50:8.1f} {p99:8.1f} {len(times):8} {errors:7} {max(peak):7.0f}  {result['attack']}",
                  flush=True)
            time.sleep(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


if __name__ == "__main__":
    main()
