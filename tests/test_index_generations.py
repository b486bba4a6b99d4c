"""Index generations: searches during rebuilds always get one whole build, and old builds go only when no
reader needs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import looping, synthetic_dataset, synthetic_space_file
from mmindex.cli import app
from mmindex.dataset.checksums import file_sum, read_record, write_record
from mmindex.dataset.indexes import RECORD, published, reading
from mmindex.index.run import build_index
from mmindex.index.settings import BuildSettings
from mmindex.index.store import IndexFiles, IndexStale

runner = CliRunner()


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def image_index(tmp_path: Path) -> IndexFiles:
    vectors = unit_vectors(3_000, 32, seed=1)
    store = synthetic_dataset(tmp_path / "ds", [[(f"k{i:05d}", None, {"image": vectors[i]})
                                                  for i in range(start, start + 1_000)] for start in (0, 1_000, 2_000)])
    return IndexFiles(store, "image")


def generations(files: IndexFiles) -> list[str]:
    return sorted(p.name for p in Path(files.root).iterdir() if p.is_dir())


def test_searches_during_rebuilds_never_mix_two_builds(tmp_path: Path):
    """Rebuilds alternate between an HNSW index (tuned with efSearch) and exact search (no parameters): a search
    that took one build's settings and the other's index file failed with FAISS's 'could not set parameter'."""
    files = image_index(tmp_path)
    build_index(files, BuildSettings())
    queries = unit_vectors(5, 32, seed=2)

    def search() -> None:
        index, keys, _ = files.load()
        _, ids = index.search(queries, 10)
        assert len(keys) == 3_000 and (ids >= 0).all()

    with looping(search, threads=2) as tally:
        for build in range(12):
            build_index(files, BuildSettings(index_type="HNSW16,Flat" if build % 2 else None))
    assert tally.failures == [] and tally.runs > 0
    assert len(generations(files)) <= 3, "old builds are removed once no reader holds them"


def test_a_build_that_a_reader_holds_is_kept_until_it_lets_go(tmp_path: Path):
    files = image_index(tmp_path)
    build_index(files, BuildSettings())
    first = published(files.root)
    with reading(first):
        build_index(files, BuildSettings())
        assert Path(first.folder).is_dir(), "a reader was opening it"
    build_index(files, BuildSettings())
    assert generations(files) == [Path(published(files.root).folder).name]


def keys_as_before(generation: Path) -> None:
    """The keys file as builds before keys.arrow wrote it, keys.parquet, and recorded so."""
    keys = generation / "keys.arrow"
    pq.write_table(pa.ipc.open_file(pa.memory_map(str(keys))).read_all(), generation / "keys.parquet")
    keys.unlink()
    recorded = read_record(str(generation / RECORD))
    sums = {path.replace("keys.arrow", "keys.parquet"): file_sum(str(generation / "keys.parquet"))
            if path.endswith("keys.arrow") else sum_ for path, sum_ in recorded.items()}
    write_record(str(generation / RECORD), sums)


def test_keys_are_mapped_not_read_and_the_keys_parquet_of_earlier_builds_is_read(tmp_path: Path):
    files = image_index(tmp_path)
    build_index(files, BuildSettings())
    allocated = pa.total_allocated_bytes()
    keys, shards = published(files.root).keys()
    assert pa.total_allocated_bytes() == allocated, "a search process holds no keys but the pages it reads"
    assert len(keys) == len(shards) == 3_000 and keys[2_999] == list(keys)[-1]
    keys_as_before(Path(published(files.root).folder))
    assert list(files.load()[1]) == list(keys) and list(files.load()[2]) == list(shards)


def test_an_index_from_before_generations_is_read_and_replaced(tmp_path: Path):
    files = image_index(tmp_path)
    build_index(files, BuildSettings())
    generation = Path(published(files.root).folder)
    root = Path(files.root)
    keys_as_before(generation)
    for name in ("index.faiss", "keys.parquet", "info.json"):  # the layout of earlier versions
        (generation / name).rename(root / name)
    (root / "CURRENT").unlink()
    assert files.info()["vectors"] == 3_000 and files.load()[0].ntotal == 3_000
    build_index(files, BuildSettings())
    assert not (root / "info.json").exists() and files.load()[0].ntotal == 3_000


def test_a_damaged_index_file_is_found_by_the_check_and_searches_say_to_rebuild(tmp_path: Path):
    files = image_index(tmp_path)
    build_index(files, BuildSettings())
    index_file = Path(published(files.root).folder) / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:55])  # truncated
    rebuild = f"mmindex index {tmp_path / 'ds'} --model synthetic"
    check = runner.invoke(app, ["index", str(tmp_path / "ds"), "--model", synthetic_space_file(tmp_path), "--check"])
    assert check.exit_code == 2 and f"{index_file} is damaged" in check.output and rebuild in check.output
    with pytest.raises(IndexStale, match="is damaged"):
        files.load()
    with pytest.raises(IndexStale, match="rebuild it"):
        build_index(files, BuildSettings(), update=True)
    build_index(files, BuildSettings())
    files.check(keys=True)
    assert files.load()[0].ntotal == 3_000
