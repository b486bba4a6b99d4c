"""``mmindex ingest``: raw folders, manifests and webdataset tars into a dataset of webdataset shards.

discover.py turns each source into candidate samples (refusing hostile layouts), validate.py checks every
file fully and gives each sample its content key, plan.py picks one sample per key and cuts shards in key
order, write.py commits shard tars and their samples parquet, records.py holds what flows between them.
steps.py declares the stage's steps once (see mmindex.stages), and run.py is the driver (settings, lock,
report) that has an executor run them: mmindex.executors on this machine, pipelines.executor on any Beam runner.
"""
