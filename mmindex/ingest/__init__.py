"""``mmindex ingest``: raw folders, manifests and webdataset tars into a dataset of webdataset shards.

discover.py turns each source into candidate samples (refusing hostile layouts), validate.py checks every
file fully and gives each sample its content key, plan.py picks one sample per key and cuts shards in key
order, write.py commits shard tars and their samples parquet, records.py holds what flows between them.
run.py is the driver (settings, lock, report); local.py is the executor on this machine, and
pipelines/ingest runs the same steps on any Beam runner.
"""
