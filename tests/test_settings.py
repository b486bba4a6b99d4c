"""Options as every command reads them: one size parser, typed settings, and one grammar for the CLI and
the Beam pipelines' own entry points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from mmindex.cli import parse
from mmindex.cli_options import embed_settings, ingest_settings
from mmindex.demo import CORPUS
from mmindex.ingest.plan import ShardSize
from mmindex.sizes import format_size, parse_size


@pytest.mark.parametrize(("text", "expected"), [
    ("512MB", 512 * 10**6), ("512MiB", 512 * 2**20), ("512mib", 512 * 2**20), ("4GB", 4 * 10**9),
    ("2GiB", 2 * 2**30), ("1.5KB", 1500), ("1.5KiB", 1536), ("1000", 1000), ("12 B", 12), (" 3tb ", 3 * 10**12),
])
def test_sizes_mean_what_their_units_say(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "0", "0MB", "-5MB", "5XB", "MB", "1e3", "5 M B"])
def test_a_size_that_is_not_one_is_refused_with_the_units_named(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_shard_size_and_max_memory_read_a_size_the_same_way():
    for text in ("512MB", "512MiB", "1GB", "1.5GiB"):
        assert ShardSize.parse(text).max_bytes == parse_size(text)
        assert ShardSize.parse(f"100,{text}") == ShardSize(100, parse_size(text))


@pytest.mark.parametrize(("size", "shown"), [
    (0, "0 B"), (930, "930 B"), (30_000, "30.0 KB"), (4_700_000, "4.7 MB"), (1_234_000_000, "1.2 GB"),
    (2 * 10**13, "20.0 TB"),
])
def test_sizes_are_printed_in_a_unit_that_never_shows_zero(size, shown):
    assert format_size(size) == shown


def test_ingest_options_become_typed_settings_and_beam_options():
    settings, beam_args = ingest_settings(parse("ingest", [
        "photos", "list.csv", "--out", "ds", "--shard-size", "100,1MiB", "--workers", "2", "--max-image-pixels", "7",
        "--max-file-bytes", "2MB", "--caption-column", "Title", "--runner=FlinkRunner", "--flink_master=host:8081"])[0])
    assert settings.sources == ("photos", "list.csv") and settings.dataset == "ds"
    assert settings.workers == 2 and ShardSize.parse(settings.shard_size) == ShardSize(100, 2**20)
    assert settings.limits.max_image_pixels == 7 and settings.limits.max_file_bytes == 2 * 10**6
    assert settings.limits.max_text_bytes == 64 * 2**10  # the default, 64KiB
    assert settings.columns.caption == ("title",) and "image_path" in settings.columns.image
    assert beam_args == ["--runner=FlinkRunner", "--flink_master=host:8081"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--out", "ds", "--runner=DirectRunner"], "at least one folder"),
    (["src", "--out", "ds", "--workers", "0"], "--workers"),
    (["src", "--out", "ds", "--shard-size", "lots"], "--shard-size"),
    (["src", "--out", "ds", "--max-text-bytes", "lots"], "not a size"),
])
def test_ingest_settings_refuse_what_cannot_run(argv, message):
    with pytest.raises(ValueError, match=message):
        ingest_settings(parse("ingest", argv)[0])


def test_embed_options_become_typed_settings_and_unknown_words_are_refused():
    settings, beam_args = embed_settings(*parse("embed", ["ds", "--model", "clip", "--batch-size", "8",
                                                          "--runner=PortableRunner"]))
    assert (settings.dataset, settings.model, settings.batch_size, settings.gpus) == ("ds", "clip", 8, None)
    assert beam_args == ["--runner=PortableRunner"]
    with pytest.raises(typer.BadParameter, match="unexpected arguments: stray"):
        embed_settings(*parse("embed", ["ds", "stray"]))
    for bad in (["--batch-size", "0"], ["--gpus", "0"], ["--decode-workers", "-1"]):
        with pytest.raises(ValueError, match=bad[0]):
            embed_settings(*parse("embed", ["ds", *bad]))


def test_the_beam_pipelines_entry_point_reads_the_commands_options(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "pipelines.ingest", str(CORPUS / "texts"), "--out",
                           str(tmp_path / "ds"), "--shard-size=5"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    texts = len(list((CORPUS / "texts").glob("*.txt")))
    assert report["counts"]["ingested"] == texts and len(report["shards_added"]) == -(-texts // 5)
    usage = subprocess.run([sys.executable, "-m", "pipelines.ingest", "--out", str(tmp_path / "x"), "--shard-size"],
                           capture_output=True, text=True, timeout=300)
    assert usage.returncode == 2 and "--shard-size" in usage.stderr and "Traceback" not in usage.stderr
