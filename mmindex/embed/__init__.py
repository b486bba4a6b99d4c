"""``mmindex embed``: every sample's media and text into a model space's vectors, shard by shard.

run.py is the driver (settings, lock, pending shards, stats, report); shard.py reads a shard's items and
embeds them; store.py is the on-disk layout and its commit rule; workers.py is the local executor, a pool
of GPU or CPU worker processes, whose decode processes hand batches back through transfer.py (shared
memory). pipelines/embed is the other executor: the same encoders in Beam's RunInference.
"""
