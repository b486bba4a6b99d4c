"""The embed job on Beam: the encoders of mmindex.embed inside RunInference, for clusters (see pipeline.py)."""
