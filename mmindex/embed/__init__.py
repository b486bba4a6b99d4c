"""``mmindex embed``: every sample's media and text into a model space's vectors, shard by shard.

shard.py reads a shard's items and embeds them (shared with the Beam pipeline), store.py is the on-disk
layout and its commit rule, workers.py runs shards on a pool of GPU or CPU worker processes.
"""
