"""Apache Beam pipelines of mmindex; they run on any Beam runner (in-process, Flink, Spark, Dataflow)."""
