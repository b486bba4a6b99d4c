"""A real `mmindex serve` for the serve tests: the CLI in its own process on a free localhost port, and an app on
uvicorn in a thread for the guards' tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import embed, ingest, read_table
from mmindex.demo import CORPUS
from mmindex.index.run import IndexSettings, build_indexes
from serve_cases import TOKEN, UPLOAD_LIMIT

ROOT = Path(__file__).resolve().parents[1]
PICKED = ["photos/chelsea_cat", "photos/coffee", "photos/astronaut", "clipart/airplane", "speech/agent_alreadyon",
          "speech/conf_locked", "texts/apple"]


class Server:
    def __init__(self, url: str, dataset: Path, process: subprocess.Popen):
        self.url, self.dataset, self.process = url, dataset, process
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {TOKEN}"
        self.samples = {Path(row["source"]).stem: row for row in read_table(dataset / "samples")}

    def search(self, **fields) -> requests.Response:
        return self.http.post(f"{self.url}/search", json=fields, timeout=60)

    def key(self, stem: str) -> str:
        return self.samples[stem]["key"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_dataset(folder: Path) -> Path:
    """A few samples of the demo corpus of every kind, ingested, embedded (offline space) and indexed."""
    corpus = folder / "corpus"
    corpus.mkdir()
    for picked in PICKED:
        for path in (CORPUS / picked).parent.glob(Path(picked).name + ".*"):
            shutil.copy(path, corpus / path.name)
    dataset = folder / "dataset"
    ingest(corpus, dataset=dataset)
    embed(dataset, threads=1)
    build_indexes(IndexSettings(str(dataset)))
    return dataset


def start_server(dataset: Path, *options: str) -> Server:
    """The CLI's server over ``dataset`` bound to every address (so it needs its token), its upload limit
    lowered to be reached cheaply; waits until it answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "mmindex", "serve", "--dataset", f"demo={dataset}",
                                "--host", "0.0.0.0", "--port", str(port), "--token", TOKEN,
                                "--max-upload", str(UPLOAD_LIMIT), *options], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/healthz", timeout=2).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.3)
    else:
        process.kill()
        pytest.fail(f"the server did not start (exit status {process.poll()})")
    return Server(url, dataset, process)


def running(app, **config) -> tuple[object, threading.Thread, str]:
    """``app`` on a real uvicorn server in a thread, on a free localhost port (``config``: uvicorn's options)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off",
                                           **config))
    thread = threading.Thread(target=server.run)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
