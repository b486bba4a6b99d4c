"""The ingest pipeline: raw multimodal corpora to webdataset shards (see pipeline.py)."""
