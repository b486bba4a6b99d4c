"""``mmindex serve``: warm models and indexes behind an HTTP API, a clip-retrieval compatible API and a web page.

settings.py (options, limits, who may connect), catalog.py (the datasets served: spaces, searchers, samples),
queries.py (search requests read and checked), members.py (media streamed from shards by key, byte ranges),
thumbnails.py, hits.py (how a hit is shown), clip_compat.py (ClipClient's protocol), policy.py (the limits
every endpoint applies), fairness.py (model threads shared fairly between clients), guards.py (token, body size,
timeout), connections.py (caps and deadlines per connection), app.py (the routes), run.py (uvicorn), static/
(the page at /).
"""
