"""Ingest of the real demo corpus: what goes in comes back out of the shards byte for byte."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from conftest import ingest, read_shards, read_table


def test_every_member_reads_back_byte_identical(corpus: Path, tmp_path: Path):
    dataset = tmp_path / "ds"
    report = ingest(corpus, dataset=dataset, extra=("--shard-size=40",))
    samples = read_shards(dataset)
    rows = {row["key"]: row for row in read_table(dataset / "samples")}

    files = [p for p in corpus.rglob("*") if p.is_file()]
    stems = {p.with_suffix("") for p in files}
    assert report.counts.found == len(stems)
    assert set(samples) == set(rows)
    assert len(samples) == report.counts.ingested > 0
    for key, members in samples.items():
        row = rows[key]
        stem = Path(row["source"]).with_suffix("")
        assert sorted(members) == row["members"]
        for ext, data in members.items():
            source_file = next(p for p in files if p.with_suffix("") == stem and p.suffix.lower()[1:] in
                               (ext, "jpeg" if ext == "jpg" else ext))
            assert data == source_file.read_bytes(), f"{source_file} changed on its way into the shard"


def test_samples_parquet_describes_each_sample(corpus: Path, tmp_path: Path):
    dataset = tmp_path / "ds"
    ingest(corpus, dataset=dataset)
    rows = read_table(dataset / "samples")
    by_folder = Counter(Path(r["source"]).parent.name for r in rows)
    assert by_folder["photos"] > 0 and by_folder["sounds"] > 0 and by_folder["speech"] > 0
    for row in rows:
        assert row["shard"] == "000000"
        assert len(row["key"]) == 20 and row["key"] == row["sha256"][:20]
        if "image" in row["modalities"]:
            assert row["width"] > 0 and row["height"] > 0 and row["image_format"] in ("jpeg", "png")
        if "audio" in row["modalities"]:
            assert row["sample_rate"] > 0 and row["duration_s"] > 0
        if row["members"] == ["txt"]:
            assert row["modalities"] == ["text"] and row["caption"]
    speech = [r for r in rows if Path(r["source"]).parent.name == "speech"]
    assert all(r["caption"] for r in speech), "each speech clip keeps its transcript as caption"


def test_metadata_json_records_counts_and_run(corpus: Path, tmp_path: Path):
    import json

    dataset = tmp_path / "ds"
    report = ingest(corpus, dataset=dataset, extra=("--shard-size=25",))
    meta = json.loads((dataset / "mmindex.json").read_text())
    assert meta["format"] == "mmindex-dataset" and meta["format_version"] == 1
    assert meta["counts"]["samples"] == report.counts.ingested
    assert [s["name"] for s in meta["shards"]] == [p.stem for p in sorted((dataset / "shards").glob("*.tar"))]
    assert all(s["samples"] <= 25 for s in meta["shards"])
    assert meta["runs"][-1]["stage"] == "ingest"
    assert meta["runs"][-1]["settings"]["shard_size"] == "25"


def test_source_names_the_file_a_person_opens(tmp_path: Path):
    from PIL import Image

    root = tmp_path / "in"
    root.mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "tiny.png")  # small enough to travel inline
    (root / "tiny.txt").write_text("a tiny image")
    (root / "note.txt").write_text("a text on its own")
    ingest(root, dataset=tmp_path / "ds")
    sources = sorted(r["source"] for r in read_table(tmp_path / "ds" / "samples"))
    assert sources == [str(root / "note.txt"), str(root / "tiny.png")]
