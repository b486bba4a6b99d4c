"""Apache Beam wiring of mmindex's ingest and embed, over functions from mmindex/; any Beam runner runs them."""
