"""Starting the server: load every dataset's models and indexes once, then answer HTTP with uvicorn, its
connections admitted and timed by connections.py."""

from __future__ import annotations

import functools
import logging
import resource
import socket

from mmindex.serve.app import create_app
from mmindex.serve.catalog import load_catalog
from mmindex.serve.connections import Gate, GuardedH11
from mmindex.serve.settings import ServeLimits, ServeSettings

log = logging.getLogger("mmindex")


def serve(settings: ServeSettings) -> None:
    import uvicorn
    from threadpoolctl import threadpool_limits

    check_address(settings.host, settings.port)  # before a minute of loading models, not after
    # One query is one vector: multithreaded BLAS only contends with the models' own threads (a text query
    # took 5x longer with torch loaded). Concurrent requests use the cores instead.
    threadpool_limits(1, user_api="blas")
    catalog = load_catalog(settings.named_datasets(), settings.device)
    app = create_app(settings, catalog)
    shown = "[::1]" if settings.host == "::1" else settings.host
    log.info("serve: %s on http://%s:%d/ (API docs at /docs)%s", ", ".join(catalog), shown, settings.port,
             "" if not settings.token else f"; open http://{shown}:{settings.port}/?token=... in a browser")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", **protocol(settings.limits))


def protocol(limits: ServeLimits) -> dict[str, object]:
    """uvicorn's options for the guarded protocol (its own concurrency cap would refuse everyone: none), with
    enough file descriptors for every connection the gate admits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = limits.connections + 256   # and the dataset's files, the models', the threads'
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted if hard == resource.RLIM_INFINITY else min(wanted, hard),
                                                    hard))
    return {"http": functools.partial(GuardedH11, gate=Gate(limits)), "timeout_keep_alive": 5,
            "limit_concurrency": None}


def check_address(host: str, port: int) -> None:
    """Refuses an address this process cannot listen on (a port in use, a host that is not this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a closing socket is no bar
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ValueError(f"cannot listen on {host}:{port} ({err.strerror or err}): choose another --port or "
                             f"--host, or stop what uses it") from None
