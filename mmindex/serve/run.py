"""Starting the server: load every dataset's models and indexes once, then answer HTTP with uvicorn."""

from __future__ import annotations

import logging

from mmindex.serve.app import create_app
from mmindex.serve.catalog import load_catalog
from mmindex.serve.settings import ServeSettings

log = logging.getLogger("mmindex")


def serve(settings: ServeSettings) -> None:
    import uvicorn
    from threadpoolctl import threadpool_limits

    # One query is one vector: multithreaded BLAS only contends with the models' own threads (a text query
    # took 5x longer with torch loaded). Concurrent requests use the cores instead.
    threadpool_limits(1, user_api="blas")
    catalog = load_catalog(settings.named_datasets(), settings.device)
    app = create_app(settings, catalog)
    shown = "[::1]" if settings.host == "::1" else settings.host
    log.info("serve: %s on http://%s:%d/ (API docs at /docs)%s", ", ".join(catalog), shown, settings.port,
             "" if not settings.token else f"; open http://{shown}:{settings.port}/?token=... in a browser")
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_keep_alive=5,
                limit_concurrency=256)
