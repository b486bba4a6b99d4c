"""Encoders: one per modality of a model space, each mapping raw media into the space's vectors.

Every encoder splits its work in two: ``preparer`` (CPU-only, picklable, runs in decode processes: decode,
resize, resample) and ``encode`` (a batch on the model's device). See base.py.
"""
