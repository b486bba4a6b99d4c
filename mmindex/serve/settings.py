"""What `mmindex serve` is told: datasets, address, who may connect, and the limits every request is held to."""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field, fields

from mmindex.sizes import parse_size

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}
TOKEN = re.compile(r"[A-Za-z0-9._~+/-]{8,}")
MAX_UPLOAD = 2**30
MAX_TIMEOUT_S = 3600.0
OPTIONS = {"upload_bytes": "--max-upload", "timeout_s": "--timeout", "client_connections": "--per-client"}


@dataclass(frozen=True)
class ServeLimits:
    """Bounds that keep one request, or one client, from exhausting the server's memory, time or connections.
    Every endpoint reads its bounds from here (policy.py applies them)."""

    upload_bytes: int = 20 * 2**20        # a whole request body (JSON with base64, or multipart)
    bodies_bytes: int = 256 * 2**20       # the bodies being received at once, in all; past it 503
    image_pixels: int = 40_000_000        # a query image's declared size (decompression bombs)
    audio_seconds: float = 120.0          # a query clip's duration
    text_bytes: int = 64 * 2**10          # a query text; refused past this
    text_read: int = 2048                 # characters of a text the models are given (they read 256-512 tokens)
    max_weight: float = 100.0             # a query part's weight lies in [-max_weight, max_weight]
    timeout_s: float = 30.0               # a request is answered 503 past this; its queued work is dropped
    max_k: int = 1000                     # hits per search, ids per /metadata
    max_vector: int = 8192                # numbers in a query vector (/search's vector, /knn-service's embedding_input)
    json_values: int = 100_000            # commas and colons in a JSON body (parsing it holds the event loop)
    thumbnail_sizes: tuple[int, int] = (16, 1024)
    connections: int = 512                # open connections in all; past it the oldest idle one is closed
    client_connections: int = 32          # open connections from one address; past it new ones get 503
    header_timeout_s: float = 10.0        # a request's line and headers must arrive within this (else closed)
    body_timeout_s: float = 60.0          # its body within this after its headers (else 408)
    client_queue: int = 8                 # queries one address may have waiting; past it 429

    def __post_init__(self) -> None:
        for one in fields(self):
            value = getattr(self, one.name)
            if one.name != "thumbnail_sizes" and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{OPTIONS.get(one.name, one.name)} {value!r}: give a finite number above zero")
        if self.upload_bytes > MAX_UPLOAD:
            raise ValueError(f"--max-upload {self.upload_bytes:,} bytes: at most {MAX_UPLOAD:,} (1 GiB)")
        if self.timeout_s > MAX_TIMEOUT_S:
            raise ValueError(f"--timeout {self.timeout_s:g}: at most {MAX_TIMEOUT_S:g} seconds")
        if self.timeout_s < 0.01:
            raise ValueError(f"--timeout {self.timeout_s:g}: at least 0.01 seconds")


def read_limits(max_upload: str, timeout: float, per_client: int) -> ServeLimits:
    """The limits the command line sets (OPTIONS), each refusal naming its option."""
    try:
        upload = parse_size(max_upload)
    except ValueError as err:
        raise ValueError(f"--max-upload {err}") from None
    return ServeLimits(upload_bytes=upload, timeout_s=timeout, client_connections=per_client)


@dataclass(frozen=True)
class ServeSettings:
    datasets: tuple[str, ...]             # PATH or NAME=PATH
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    open: bool = False                    # bound to another address without a token, on purpose
    limits: ServeLimits = field(default_factory=ServeLimits)
    device: str = "cpu"
    cors_origins: tuple[str, ...] = ()    # web pages elsewhere allowed to call the API (clip front, say)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: a port is a whole number from 0 to 65535 (0: any free port)")
        if not self.datasets:
            raise ValueError("no dataset to serve: give --dataset PATH (or NAME=PATH), once per dataset")
        if not is_loopback(self.host) and not self.token and not self.open:
            raise ValueError(f"--host {self.host} lets other machines connect: give --token SECRET (clients send "
                             f"'Authorization: Bearer SECRET') or --open to serve it to anyone who can reach it")
        if self.token is not None and not TOKEN.fullmatch(self.token):
            raise ValueError("--token must be at least 8 characters, each a letter, a digit or one of - . _ ~ + / "
                             "(it travels in headers and a cookie)")
        self.named_datasets()  # raises when two datasets would get one name
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"--cors {origin}: give a page's origin, e.g. https://rom1504.github.io")

    def named_datasets(self) -> dict[str, str]:
        """Dataset name -> path: NAME=PATH, else the folder's name (its parent's when it is called 'dataset')."""
        named: dict[str, str] = {}
        for spec in self.datasets:
            name, sep, path = spec.partition("=")
            if not sep:
                path = spec
                parts = [p for p in spec.rstrip("/").split("/") if p]
                name = parts[-2] if len(parts) > 1 and parts[-1] == "dataset" else (parts[-1] if parts else spec)
            if not name or "/" in name or name in named:
                raise ValueError(f"--dataset {spec}: each dataset needs its own name without '/': use NAME=PATH")
            named[name] = path
        return named


def is_loopback(host: str) -> bool:
    """Whether only this machine can connect to ``host``."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
