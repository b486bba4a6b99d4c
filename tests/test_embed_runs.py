"""`mmindex embed` runs: resume, repeat, worker counts, corrupt media, the Beam pipeline, errors."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import copy_dataset, embed, embeddings, file_digests, read_table
from mmindex.cli import app
from pipelines.embed.pipeline import run as run_beam_embed


def test_a_repeat_does_nothing_and_touches_nothing(offline_embedded, capsys):
    before = file_digests(offline_embedded)
    result = embed(offline_embedded)
    assert result.pending == 0 and "Nothing to do" in capsys.readouterr().out
    assert file_digests(offline_embedded) == before


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"resource_tracker" not in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds worker processes through /proc")
@pytest.mark.faults
def test_a_run_whose_worker_is_killed_resumes_with_only_the_unfinished_shards(offline_embedded, demo_dataset,
                                                                                tmp_path):
    dataset = copy_dataset(demo_dataset, tmp_path)
    out = dataset / "embeddings" / "offline"
    run = subprocess.Popen([sys.executable, "-m", "mmindex", "embed", str(dataset), "--workers", "2", "--threads", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("*.parquet")) and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.2)
    workers = children(run.pid)
    assert workers, "no worker processes found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    output = run.communicate(timeout=120)[0]
    committed = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert run.returncode == 1 and "run the same command again" in output, output
    assert 0 < len(committed) < 6, output

    result = embed(dataset, threads=1)
    assert result.pending == 6 - len(committed)
    assert {name: (out / name).stat().st_mtime_ns for name in committed} == committed  # not recomputed
    assert embeddings(dataset, "offline") == embeddings(offline_embedded, "offline")
    assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]  # what the killed run left is gone


def corrupt_first_image(dataset: Path) -> str:
    """Overwrites the start of a JPEG inside a committed shard, in place (bit rot after ingest)."""
    for shard in sorted((dataset / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            member = next((m for m in tar if m.name.endswith(".jpg")), None)
        if member:
            with open(shard, "r+b") as f:
                f.seek(member.offset_data)
                f.write(b"\0" * 64)
            return member.name.split(".")[0]
    raise AssertionError("no jpg in the dataset")


def test_corrupt_media_in_a_shard_is_skipped_with_a_reason_and_the_run_goes_on(demo_dataset, tiny_clip, tmp_path,
                                                                               capsys):
    dataset = copy_dataset(demo_dataset, tmp_path)
    broken = corrupt_first_image(dataset)
    result = embed(dataset, str(tiny_clip))
    rows = read_table(dataset / "embeddings" / "tiny-clip")
    image_rows = {r["key"]: r for r in rows if r["modality"] == "image"}
    assert image_rows[broken]["skipped"].startswith("unreadable image") and image_rows[broken]["row"] is None
    assert sum(r["row"] is not None for r in image_rows.values()) == 34
    assert any(r["key"] == broken and r["modality"] == "text" and r["row"] is not None for r in rows)
    assert result.skipped["image", "unreadable image"] == 1
    assert "1 skipped: unreadable image" in capsys.readouterr().out


def test_a_damaged_shard_file_fails_alone_and_is_retried_by_the_next_run(demo_dataset, tiny_clip, tmp_path):
    dataset = copy_dataset(demo_dataset, tmp_path)
    tar = dataset / "shards" / "000002.tar"
    intact = tar.read_bytes()
    tar.write_bytes(intact[:700])  # cut inside the first member's data
    result = CliRunner().invoke(app, ["embed", str(dataset), "--model", str(tiny_clip), "--decode-workers", "0"])
    assert result.exit_code == 1
    assert "shard 000002 is damaged" in result.output and f"mmindex check {dataset} --repair" in result.output
    out = dataset / "embeddings" / "tiny-clip"
    assert sorted(p.stem for p in out.glob("*.parquet")) == ["000000", "000001", "000003", "000004", "000005"]
    tar.write_bytes(intact)
    assert embed(dataset, str(tiny_clip)).pending == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickle"])
def test_damaged_embeddings_are_reported_with_the_repair_and_embed_repairs_them(demo_dataset, tiny_clip, tmp_path,
                                                                                damage):
    dataset = copy_dataset(demo_dataset, tmp_path)
    embed(dataset, str(tiny_clip))
    before = embeddings(dataset, "tiny-clip")
    npy = dataset / "embeddings" / "tiny-clip" / "image" / "000002.npy"
    damaged = {"garbage": b"\x00garbage" * 50, "truncated": npy.read_bytes()[:-10],
               "pickle": pickle.dumps(["a", "list"])}[damage]
    npy.write_bytes(damaged)
    for command in (["eval", str(dataset)], ["index", str(dataset)]):
        refused = CliRunner().invoke(app, [*command, "--model", str(tiny_clip)])
        assert refused.exit_code == 2, refused.output
        assert f"{npy} is damaged" in refused.output and f"mmindex embed {dataset} --model tiny-clip" in refused.output
        assert "allow_pickle" not in refused.output, "never a hint to unpickle"
    repaired = embed(dataset, str(tiny_clip))
    assert repaired.pending == 1 and repaired.committed == 1, "only the damaged shard is embedded again"
    assert embeddings(dataset, "tiny-clip") == before


def test_the_beam_pipeline_gives_the_worker_pools_vectors(demo_dataset, tiny_clip, tmp_path):
    pool = copy_dataset(demo_dataset, tmp_path / "pool")
    embed(pool, str(tiny_clip), batch_size=8, threads=1, decode_workers=0)
    beam = copy_dataset(demo_dataset, tmp_path / "beam")
    result = run_beam_embed([str(beam), f"--model={tiny_clip}", "--batch-size=8", "--threads=1"])
    assert result.pending == 6
    # The same batches and torch threads: the same bytes, vectors included.
    assert embeddings(beam, "tiny-clip") == embeddings(pool, "tiny-clip")
    assert run_beam_embed([str(beam), f"--model={tiny_clip}"]).pending == 0


def test_audio_and_text_spaces_embed_every_clip(demo_dataset, tiny_clap, tmp_path):
    dataset = copy_dataset(demo_dataset, tmp_path)
    result = embed(dataset, str(tiny_clap), batch_size=7, decode_workers=0)
    assert dict(result.embedded) == {"audio": 40, "text": 113}
    assert not result.skipped


def test_gpus_without_cuda_is_a_clear_error(demo_dataset):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(app, ["embed", str(demo_dataset), "--gpus", "1"])
    assert result.exit_code == 2
    assert "CUDA" in result.output and "--device cpu" in result.output


def test_other_settings_under_the_same_space_name_are_refused(demo_dataset, tiny_clip, tiny_clap, tmp_path):
    dataset = copy_dataset(demo_dataset, tmp_path)
    space = tmp_path / "mine.yaml"
    space.write_text(f"kind: huggingface\nmodel: {tiny_clip}\n")
    embed(dataset, str(space))
    space.write_text(f"kind: huggingface\nmodel: {tiny_clap}\n")
    result = CliRunner().invoke(app, ["embed", str(dataset), "--model", str(space)])
    assert result.exit_code == 2 and "other settings" in result.output


@pytest.mark.parametrize("beam", [[], ["--runner=BundleBasedDirectRunner"]], ids=["pool", "beam"])
def test_embedding_a_dataset_that_was_never_ingested_says_what_to_run(tmp_path, beam):
    result = CliRunner().invoke(app, ["embed", str(tmp_path / "nothing"), *beam])
    assert result.exit_code == 2 and "mmindex ingest" in result.output
    assert not (tmp_path / "nothing").exists()
