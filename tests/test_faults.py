"""Fault injection: ingest, embed and index crash (SIGKILL) at seeded points, and fail with a full or failing
disk (ENOSPC, EIO) at seeded points of their writes and on a disk that really fills up; searches in separate
processes run while the index is rebuilt. Nothing half-written may be visible after any fault, a disk error
must be one line and exit status 1, and the next normal run must give the dataset a clean run gives, byte for
byte (see ``snapshot`` for the few records of a run's own times that are left out).

The points are the file operations each run makes inside its dataset (tests/faultpoints.py), counted in a
clean run and drawn with MMINDEX_FAULT_SEED; MMINDEX_FAULT_POINTS sets how many per stage and fault (3).
A failure names the seed and the point, so it can be run again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import ingest, read_shards, synthetic_dataset, synthetic_space_file
from faultpoints import DISK_FULL, KINDS, Points, inject
from mmindex.cli import app
from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.demo import CORPUS
from mmindex.index.run import IndexSettings, build_indexes
from mmindex.index.settings import BuildSettings
from mmindex.index.store import IndexFiles
from mmindex.spaces import resolve_space

pytestmark = pytest.mark.faults
runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
SEED = int(os.environ.get("MMINDEX_FAULT_SEED", "1126"))
POINTS = int(os.environ.get("MMINDEX_FAULT_POINTS", "3"))
SHARDS_A, SHARDS_B = ("--shard-size", "20"), ("--shard-size", "5")


def draw(what: str, passed: list[tuple[str, str]], kinds: tuple[str, ...] = KINDS) -> list[int]:
    """POINTS seeded points among those of ``kinds`` that a clean run passed (numbered over those kinds)."""
    count = sum(kind in kinds for kind, _ in passed)
    return sorted(random.Random(f"{SEED}:{what}").sample(range(1, count + 1), min(POINTS, count)))


def point_of(passed: list[tuple[str, str]], kind: str, name: str) -> int:
    """The number of the last point of ``kind`` on a file called ``name``: a step that commits."""
    return max(i for i, (k, path) in enumerate(passed, 1) if k == kind and Path(path).name == name)


def why(what: str, at: int, passed: list[tuple[str, str]], kinds: tuple[str, ...] = KINDS) -> str:
    kind, path = [p for p in passed if p[0] in kinds][at - 1]
    return f"{what}: seed {SEED}, point {at} (in the clean run: {kind} {path})"


# ---- what a dataset holds, and what must hold after a fault ---------------------------------------------

def snapshot(dataset: Path) -> dict[str, str]:
    """sha256 of every file of a dataset, by path. Left out: what records a run rather than its result, namely
    the runs listed in mmindex.json (ids, times, and what each found to do: an interrupted run may be recorded
    or not), embeddings' stats.json (each run's times) and an index's build_seconds (and so its info.json's
    recorded sum). The published index
    generation is compared as ``published`` (its number counts builds, killed ones too; CURRENT, which holds
    that number, is left out); any other is a leftover and stays under its own name, so it shows up."""
    digests = {}
    for path in sorted(p for p in dataset.rglob("*") if p.is_file()):
        parts = list(path.relative_to(dataset).parts)
        data = path.read_bytes()
        if parts == ["mmindex.json"]:
            data = _without(data, "runs")
        elif parts[0] == "embeddings" and parts[-1] == "stats.json":
            continue
        elif parts[0] == "indexes" and parts[-1] == "CURRENT":
            continue  # it names the published generation, compared as such
        elif parts[0] == "indexes" and len(parts) == 5:
            if (path.parent.parent / "CURRENT").read_text() == parts[3]:
                parts[3] = "published"
            if parts[-1] == "info.json":
                data = _without(data, "build_seconds")
            elif parts[-1] == "checksums.json":  # names the generation's files: its number, and info.json's sum
                files = {name.replace(f"/{path.parent.name}/", "/published/"): recorded
                         for name, recorded in json.loads(data)["files"].items() if not name.endswith("info.json")}
                data = json.dumps(files, sort_keys=True).encode()
        digests["/".join(parts)] = hashlib.sha256(data).hexdigest()
    return digests


def _without(data: bytes, key: str) -> bytes:
    record = json.loads(data)
    record.pop(key)
    return json.dumps(record, sort_keys=True).encode()


def assert_whole(dataset: Path, space: str | None = None) -> None:
    """What readers see is whole: every committed shard holds exactly its samples, every committed shard's
    embeddings read back, every published index loads and agrees with the embeddings."""
    for samples in sorted((dataset / "samples").glob("*.parquet")):
        keys = set(pq.read_table(samples).column("key").to_pylist())
        with tarfile.open(dataset / "shards" / f"{samples.stem}.tar") as tar:
            assert {name.split(".")[0] for name in tar.getnames()} == keys, samples
    if (dataset / "mmindex.json").exists():
        json.loads((dataset / "mmindex.json").read_text())
    if space is None or not (dataset / "embeddings" / space).is_dir():
        return
    store = EmbeddingStore.of(str(dataset), resolve_space(space))
    for number in sorted(store.committed()):
        store.read(number)
    for modality in ("image", "text"):
        files = IndexFiles(store, modality)
        if files.exists():
            files.check()
            assert files.load()[0].ntotal == files.info()["vectors"]


def temporary_files(dataset: Path) -> list[Path]:
    return [p for p in dataset.rglob("*") if p.name.startswith(".tmp-")]


def copy(dataset: Path, target: Path) -> Path:
    return Path(shutil.copytree(dataset, target, symlinks=True))


# ---- running a command: killed at a point in a process of its own, or failing in this one -------------

def crash(args: list[str], dataset: Path, at: int) -> subprocess.CompletedProcess:
    """``mmindex ARGS`` in a new process, killed with SIGKILL at point ``at`` of its operations in ``dataset``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
           "FAULT_ROOT": str(dataset), "FAULT_AT": str(at), "FAULT_ACTION": "kill"}
    return subprocess.run([sys.executable, "-m", "faultpoints", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


def assert_one_line_exit_1(result, dataset: Path, says: str) -> None:
    """A disk error: exit status 1, one line that names a file of the dataset and what to do, no traceback."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and says in errors[0] and str(dataset) in errors[0], result.output
    assert "Traceback" not in result.output, result.output


# ---- the runs every test starts from ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> tuple[Path, Path]:
    """Two batches from the demo corpus: photos and texts, then clipart and sounds with bad inputs (a broken
    JPEG, a truncated PNG, and a photo that the first batch already holds)."""
    root = tmp_path_factory.mktemp("sources")
    first, second = root / "first", root / "second"
    for name in ("photos", "texts"):
        shutil.copytree(CORPUS / name, first / name)
    for name in ("clipart", "sounds"):
        shutil.copytree(CORPUS / name, second / name)
    (second / "broken.jpg").write_bytes(b"not a jpeg")
    png = (CORPUS / "clipart" / "bus.png").read_bytes()
    (second / "truncated.png").write_bytes(png[: len(png) // 2])
    (second / "again").mkdir()
    for ext in ("jpg", "txt", "json"):  # the whole sample: its key is that of its members' content
        shutil.copy(CORPUS / "photos" / f"coffee.{ext}", second / "again" / f"coffee.{ext}")
    return first, second


class Reference:
    """A dataset before a stage's run, the same dataset after a clean run, and the points that run passed."""

    def __init__(self, before: Path, after: Path, passed: list[tuple[str, str]]):
        self.before, self.after, self.passed = before, after, passed


@pytest.fixture(scope="module")
def ingested(sources, tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("ingested")
    ingest(sources[0], dataset=root / "before", extra=SHARDS_A)
    after = copy(root / "before", root / "after")
    with inject(Points(str(after))) as points:
        report = ingest(sources[1], dataset=after, extra=SHARDS_B)
    assert report.counts.rejected_by_reason == {"truncated image": 1, "unreadable image": 1}
    assert report.counts.already_present == 1
    assert_whole(after)
    return Reference(root / "before", after, points.seen)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> str:
    from tiny_models import save_tiny_clip

    return str(save_tiny_clip(tmp_path_factory.mktemp("models") / "clip"))


EMBED = ("--threads", "1", "--decode-workers", "0")  # one thread: the vectors of every run are bit-identical


@pytest.fixture(scope="module")
def embedded(ingested, clip, tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("embedded")
    after = copy(ingested.after, root / "after")
    with inject(Points(str(after))) as points:
        done = runner.invoke(app, ["embed", str(after), "--model", clip, *EMBED])
    assert done.exit_code == 0, done.output
    assert_whole(after, "clip")
    return Reference(ingested.after, after, points.seen)


@pytest.fixture(scope="module")
def indexed(embedded, clip, tmp_path_factory) -> Reference:
    """A rebuild over an existing index: crashes can then land while the old build is still published."""
    root = tmp_path_factory.mktemp("indexed")
    before = copy(embedded.after, root / "before")
    assert runner.invoke(app, ["index", str(before), "--model", clip]).exit_code == 0
    after = copy(before, root / "after")
    with inject(Points(str(after))) as points:
        done = runner.invoke(app, ["index", str(after), "--model", clip])
    assert done.exit_code == 0, done.output
    assert_whole(after, "clip")
    return Reference(before, after, points.seen)


def stage_args(stage: str, sources: tuple[Path, Path], clip: str, dataset: Path) -> list[str]:
    return {"ingest": ["ingest", str(sources[1]), "--out", str(dataset), *SHARDS_B],
            "embed": ["embed", str(dataset), "--model", clip, *EMBED],
            "index": ["index", str(dataset), "--model", clip]}[stage]


@pytest.fixture
def stages(sources, clip, ingested, embedded, indexed):
    return {"ingest": ingested, "embed": embedded, "index": indexed}, lambda stage, dataset: stage_args(
        stage, sources, clip, dataset)


# ---- crashes ----------------------------------------------------------------------------------------------

COMMITS = {"ingest": "mmindex.json", "embed": "stats.json", "index": "CURRENT"}  # each run's last commit


@pytest.mark.parametrize("stage", ["ingest", "embed", "index"])
def test_a_run_killed_at_any_point_is_completed_by_the_next_one(stage: str, stages, tmp_path: Path):
    """SIGKILL at seeded points, and just before the run's last commit (the rename that records it): what is
    visible afterwards is whole, and a normal run then gives the clean run's dataset."""
    references, args = stages
    reference = references[stage]
    points = [*draw(stage, reference.passed), point_of(reference.passed, "rename", COMMITS[stage])]
    for at in points:
        dataset = copy(reference.before, tmp_path / f"killed-at-{at}")
        killed = crash(args(stage, dataset), dataset, at)
        where = why(stage, at, reference.passed)
        assert killed.returncode == -9, f"{where}: not killed ({killed.returncode}): {killed.stderr[-2000:]}"
        assert_whole(dataset, "clip")
        again = runner.invoke(app, args(stage, dataset))
        assert again.exit_code == 0, f"{where}: {again.output}"
        assert not (dataset / ".lock").exists() and not temporary_files(dataset), where
        assert snapshot(dataset) == snapshot(reference.after), where


# ---- disk errors at seeded points -------------------------------------------------------------------------

SAYS = {"ENOSPC": "no space left on the disk holding", "EIO": "input/output error on"}


@pytest.mark.parametrize("fault", ["ENOSPC", "EIO"])
@pytest.mark.parametrize("stage", ["ingest", "embed", "index"])
def test_a_disk_error_is_one_line_leaves_nothing_half_written_and_the_next_run_completes(stage: str, fault: str,
                                                                                        stages, tmp_path: Path):
    references, args = stages
    reference = references[stage]
    for at in draw(f"{stage}:{fault}", reference.passed, DISK_FULL):
        dataset = copy(reference.before, tmp_path / f"{fault}-at-{at}")
        where = why(f"{stage} {fault}", at, reference.passed, DISK_FULL)
        with inject(Points(str(dataset), at, fault, DISK_FULL)) as points:
            failed = runner.invoke(app, args(stage, dataset))
        assert len(points.seen) >= at, f"{where}: the run ended before the point"
        assert_one_line_exit_1(failed, dataset, SAYS[fault])
        assert not temporary_files(dataset) and not (dataset / ".lock").exists(), where
        assert_whole(dataset, "clip")
        again = runner.invoke(app, args(stage, dataset))
        assert again.exit_code == 0, f"{where}: {again.output}"
        assert snapshot(dataset) == snapshot(reference.after), where


# ---- a disk that really fills up ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB file system of its own (tmpfs; needs root, as CI has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: a memory-mapped index may still be open


def fill(disk: Path, leave: int) -> Path:
    """Fills the disk but for about ``leave`` bytes; deleting the returned file frees the space."""
    filler = disk / "filler"
    stat = os.statvfs(disk)
    with open(filler, "wb") as f:
        f.write(bytes(max(0, stat.f_bavail * stat.f_frsize - leave)))
    return filler


@pytest.mark.parametrize("stage", ["ingest", "embed", "index"])
def test_a_disk_that_fills_up_mid_run_loses_nothing(stage: str, stages, small_disk: Path):
    """A real full disk: full already, one page left, and seeded amounts short of enough room. One line, exit 1,
    what was committed is whole and nothing half-written stays; the next run, with room, gives the clean run's
    dataset."""
    references, args = stages
    reference = references[stage]
    before = {p.relative_to(reference.before): p.stat().st_size for p in reference.before.rglob("*") if p.is_file()}
    needed = sum(p.stat().st_size for p in reference.after.rglob("*")
                 if p.is_file() and before.get(p.relative_to(reference.after)) != p.stat().st_size)
    seeded = random.Random(f"{SEED}:{stage}:disk").sample(range(8192, max(needed, 8193)), max(1, POINTS - 2))
    for leave in [0, 4096, *sorted(seeded)]:  # full; one page (the lock takes it); seeded
        dataset = copy(reference.before, small_disk / "ds")
        filler = fill(small_disk, leave)
        full = runner.invoke(app, args(stage, dataset))
        where = f"{stage}: seed {SEED}, {leave:,} bytes free"
        assert_one_line_exit_1(full, dataset, SAYS["ENOSPC"])
        assert not temporary_files(dataset) and not (dataset / ".lock").exists(), where
        assert_whole(dataset, "clip")
        filler.unlink()
        again = runner.invoke(app, args(stage, dataset))
        assert again.exit_code == 0, f"{where}: {again.output}"
        assert snapshot(dataset) == snapshot(reference.after), where
        shutil.rmtree(dataset)


def test_an_index_that_does_not_fit_on_the_disk_is_one_line_and_the_old_build_stays_published(small_disk: Path):
    """FAISS wrote the index file itself: a full disk was its own error (exit 2, FAISS's message), and a failed
    close was only printed, so a truncated file could be renamed into place."""
    import numpy as np

    vectors = np.random.default_rng(SEED).standard_normal((3_000, 32)).astype(np.float32)
    shards = [[(f"k{i:05d}", None, {"image": vectors[i]}) for i in range(s, s + 1_000)] for s in (0, 1_000, 2_000)]
    store = synthetic_dataset(small_disk / "ds", shards)
    command = ["index", str(small_disk / "ds"), "--model", synthetic_space_file(small_disk.parent)]
    assert runner.invoke(app, command).exit_code == 0
    files = IndexFiles(store, "image")
    published = Path(files.root, (Path(files.root) / "CURRENT").read_text())
    filler = fill(small_disk, 64 * 1024)  # the index takes 384 KB
    full = runner.invoke(app, command)
    assert_one_line_exit_1(full, small_disk / "ds", SAYS["ENOSPC"])
    assert "index.faiss" in full.output
    assert sorted(p.name for p in Path(files.root).iterdir()) == ["CURRENT", published.name], "nothing else is left"
    assert files.load()[0].ntotal == 3_000
    filler.unlink()
    assert runner.invoke(app, command).exit_code == 0
    files.check(keys=True)


def test_a_full_disk_under_beam_is_one_line_too(sources, ingested, small_disk: Path):
    """Beam retried the failing shard writes, logged every try with a traceback, and reported the disk error as
    text inside its own exception: exit 2 and dozens of lines."""
    dataset = copy(ingested.before, small_disk / "ds")
    command = [*stage_args("ingest", sources, "", dataset), "--runner=BundleBasedDirectRunner"]
    filler = fill(small_disk, 8192)  # the lock takes a page, the first shard needs more than the other
    full = runner.invoke(app, command)
    assert_one_line_exit_1(full, dataset, SAYS["ENOSPC"])
    assert not temporary_files(dataset) and not (dataset / ".lock").exists()
    assert_whole(dataset)
    filler.unlink()
    assert runner.invoke(app, command).exit_code == 0
    assert set(read_shards(dataset)) == set(read_shards(ingested.after)), "the same samples (in shards Beam chose)"


# ---- searches while the index is rebuilt -------------------------------------------------------------------

SEARCHES = int(os.environ.get("MMINDEX_FAULT_SEARCHES", "16"))


def test_searches_in_other_processes_during_rebuilds_never_fail_or_abort(tmp_path: Path):
    """Every search is its own `mmindex search` process (a process that aborted at exit after printing its
    results was a failure too) while rebuilds alternate an HNSW index (searched with efSearch) and exact
    search. Every exit status must be 0 and every output the JSON of k results."""
    import numpy as np

    vectors = np.random.default_rng(SEED).standard_normal((1_200, 384)).astype(np.float32)
    synthetic_dataset(tmp_path / "ds", [[(f"k{i:05d}", f"caption {i}", {"image": vectors[i], "text": vectors[-i]})
                                         for i in range(start, start + 400)] for start in (0, 400, 800)])
    space = synthetic_space_file(tmp_path)
    settings = IndexSettings(str(tmp_path / "ds"), space)
    build_indexes(settings)
    command = [sys.executable, "-m", "mmindex", "search", "-d", str(tmp_path / "ds"), "--model", space, "--json",
               "-k", "5"]
    outcomes: list[tuple[int, str, str]] = []

    def search(queries: list[str]) -> None:
        for query in queries:
            result = subprocess.run([*command, query], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                    capture_output=True, text=True, timeout=300)
            outcomes.append((result.returncode, result.stdout, result.stderr))

    queries = [f"a photo of thing number {i}" for i in range(SEARCHES)]
    searchers = [threading.Thread(target=search, args=(queries[i::2],)) for i in range(2)]
    for thread in searchers:
        thread.start()
    builds = 0
    try:
        while any(thread.is_alive() for thread in searchers):
            kind = "HNSW32,Flat" if builds % 2 == 0 else None
            build_indexes(IndexSettings(settings.dataset, space, BuildSettings(index_type=kind)))
            builds += 1
    finally:
        for thread in searchers:
            thread.join()
    print(f"{len(outcomes)} searches during {builds} rebuilds")  # for the record (pytest -s)
    failures = [(code, err[-500:]) for code, _, err in outcomes if code != 0]
    assert failures == [], f"{len(failures)} of {len(outcomes)} searches failed during {builds} rebuilds"
    for _, out, _ in outcomes:
        hits = json.loads(out)
        assert [hit["rank"] for hit in hits] == [1, 2, 3, 4, 5] and all(hit["key"][0] == "k" for hit in hits)
    assert builds >= 2 and len(outcomes) == SEARCHES


def test_the_fault_points_fail_where_the_system_would(tmp_path: Path):
    """The injector itself: a write's error carries no file name (the writer adds it), an open's does."""
    target = tmp_path / "f"
    with inject(Points(str(tmp_path), 2, "ENOSPC")), pytest.raises(OSError) as err, open(target, "wb") as f:
        f.write(b"x")
    assert err.value.errno == errno.ENOSPC and err.value.filename is None
    with inject(Points(str(tmp_path), 1, "EIO")), pytest.raises(OSError) as err:
        open(target, "wb")  # noqa: SIM115 (it fails)
    assert err.value.errno == errno.EIO and err.value.filename == str(target)
