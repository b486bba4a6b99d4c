"""Executors: they run any stage declared with mmindex.stages and decide only how its steps are distributed.

local.py runs a declaration on this machine, at the speed of hand-written code: threads for work that releases
the GIL, worker processes (one per device, each set up once: processes.py) for the rest, a thread that reads
ahead, a memory budget for data kept between steps, and results committed in key order. pipelines.executor
translates the same declaration into Beam transforms for any runner.
"""
