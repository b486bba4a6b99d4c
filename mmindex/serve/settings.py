"""What `mmindex serve` is told: datasets, address, who may connect, and the limits every request is held to."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


@dataclass(frozen=True)
class ServeLimits:
    """Bounds that keep one request from exhausting the server's memory or time."""

    upload_bytes: int = 20 * 2**20        # a whole request body (JSON with base64, or multipart)
    image_pixels: int = 40_000_000        # a query image's declared size (decompression bombs)
    audio_seconds: float = 120.0          # a query clip's duration
    text_bytes: int = 64 * 2**10          # a query text (models read the first few hundred tokens anyway)
    timeout_s: float = 30.0               # a request is answered 503 past this
    max_k: int = 1000                     # hits per search
    thumbnail_sizes: tuple[int, int] = (16, 1024)


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
        if not self.datasets:
            raise ValueError("no dataset to serve: give --dataset PATH (or NAME=PATH), once per dataset")
        if not is_loopback(self.host) and not self.token and not self.open:
            raise ValueError(f"--host {self.host} lets other machines connect: give --token SECRET (clients send "
                             f"'Authorization: Bearer SECRET') or --open to serve it to anyone who can reach it")
        if self.token is not None and len(self.token) < 8:
            raise ValueError("--token must be at least 8 characters")
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
