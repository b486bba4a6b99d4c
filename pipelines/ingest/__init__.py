"""The ingest job on Beam: the steps of mmindex.ingest wired as a pipeline (see pipeline.py)."""
