"""Apache Beam wiring only: executor.py runs any stage declared in mmindex/ (ingest, embed) on any Beam runner."""
