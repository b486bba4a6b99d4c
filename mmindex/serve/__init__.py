"""``mmindex serve``: warm models and indexes behind an HTTP API, a clip-retrieval compatible API and a web page.

settings.py (options, limits, who may connect), catalog.py (the datasets served: spaces, searchers, samples),
requests.py (search requests read and checked), members.py (media streamed from shards by key, byte ranges),
thumbnails.py, clip_compat.py (ClipClient's protocol), app.py (the routes), run.py (uvicorn).
"""
