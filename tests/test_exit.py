"""Processes that read parquet exit cleanly: a command that printed its results must not then abort."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mmindex.dataset.parquet import parquet_bytes
from mmindex.dataset.samples import SAMPLES_SCHEMA

READ_THEN_EXIT = ("import sys; from mmindex.dataset.parquet import read_parquet; "
                  "print(read_parquet(sys.argv[1]).num_rows)")


def test_reading_parquet_never_aborts_the_process_at_exit(tmp_path: Path):
    """Arrow's I/O threads used to release Python-backed buffers after the interpreter began to exit, which
    aborted about one process in three with 'terminate called without an active exception' (exit 134)."""
    path = tmp_path / "000000.parquet"
    rows = [{"key": f"{i:020d}", "shard": "000000", "modalities": ["text"], "members": ["txt"], "caption": str(i),
             "source": f"t/{i}.txt", "sha256": f"{i:064d}", "bytes": i} for i in range(500)]
    path.write_bytes(parquet_bytes(rows, SAMPLES_SCHEMA))
    for _ in range(20):
        done = subprocess.run([sys.executable, "-c", READ_THEN_EXIT, str(path)], capture_output=True, text=True,
                              timeout=120)
        assert (done.returncode, done.stdout.strip()) == (0, "500"), done.stderr
