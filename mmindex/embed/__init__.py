"""``mmindex embed``: every sample's media and text into a model space's vectors, shard by shard.

run.py is the driver (settings, lock, pending shards, stats, report); steps.py declares the stage's one step
(see mmindex.stages): a worker that loaded the space's encoders once embeds and commits whole shards, with
decode processes of its own that hand batches back through transfer.py (shared memory); shard.py reads a
shard's items and embeds them; store.py is the on-disk layout and its commit rule. Executors run the step:
mmindex.executors on this machine (one worker process per GPU, or N on CPU), pipelines.executor on any Beam
runner.
"""
