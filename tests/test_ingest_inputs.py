"""Manifests (csv, tsv, jsonl, parquet) and existing webdataset tars as inputs."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ingest, read_shards, read_table


def manifest_rows(corpus: Path) -> list[dict]:
    photos = sorted((corpus / "photos").glob("*.jpg"))[:3]
    sounds = sorted((corpus / "sounds").glob("*.mp3"))[:2]
    rows = [{"image": f"photos/{p.name}", "caption": f"photo number {i}", "license": "cc0", "rank": i}
            for i, p in enumerate(photos)]
    rows += [{"audio": f"sounds/{p.name}", "caption": f"sound number {i}", "license": "cc0", "rank": i}
             for i, p in enumerate(sounds)]
    rows.append({"caption": "a caption alone is a text sample", "license": "cc0", "rank": 99})
    return rows


def write_manifest(rows: list[dict], path: Path) -> None:
    columns = ["image", "audio", "caption", "license", "rank"]
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), path)
    else:
        sep = "\t" if path.suffix == ".tsv" else ","
        lines = [sep.join(columns)] + [sep.join(str(r.get(c, "")) for c in columns) for r in rows]
        path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_manifest_rows_become_samples(corpus: Path, tmp_path: Path, suffix: str):
    rows = manifest_rows(corpus)
    manifest = corpus / f"list{suffix}"
    write_manifest(rows, manifest)
    dataset = tmp_path / "ds"
    report = ingest(manifest, dataset=dataset)
    assert report.counts.found == report.counts.ingested == len(rows)

    samples = read_shards(dataset)
    by_caption = {s["txt"].decode(): s for s in samples.values()}
    for row in rows:
        sample = by_caption[row["caption"]]
        meta = json.loads(sample["json"])
        assert meta["license"] == "cc0" and str(meta["rank"]) == str(row["rank"])
        if "image" in row:
            assert sample["jpg"] == (corpus / row["image"]).read_bytes()
        if "audio" in row:
            assert sample["mp3"] == (corpus / row["audio"]).read_bytes()
    text_row = next(r for r in read_table(dataset / "samples") if r["modalities"] == ["text"])
    assert text_row["source"].endswith(f"list{suffix}#row={len(rows) + (1 if suffix in ('.csv', '.tsv') else 0)}")


def test_manifest_columns_can_be_named(corpus: Path, tmp_path: Path):
    photo = sorted((corpus / "photos").glob("*.jpg"))[0]
    manifest = corpus / "custom.csv"
    manifest.write_text(f"pic,words\nphotos/{photo.name},a named column\n")
    dataset = tmp_path / "ds"
    ingest(manifest, dataset=dataset, extra=("--image-column=pic", "--caption-column=WORDS"))
    (sample,) = read_shards(dataset).values()
    assert sample["txt"] == b"a named column" and sample["jpg"] == photo.read_bytes()


def test_tars_reshard_and_merge_without_changing_a_byte(corpus: Path, tmp_path: Path):
    first = tmp_path / "first"
    ingest(corpus / "photos", corpus / "sounds", dataset=first, extra=("--shard-size=4",))
    second = tmp_path / "second"
    ingest(corpus / "speech", dataset=second)
    gz = tmp_path / "speech.tar.gz"
    with tarfile.open(gz, "w:gz") as out, tarfile.open(second / "shards" / "000000.tar") as src:
        for info in src:
            out.addfile(info, src.extractfile(info))

    merged = tmp_path / "merged"
    report = ingest(str(first / "shards" / "*.tar"), gz, dataset=merged, extra=("--shard-size=1000",))
    expected = read_shards(first) | read_shards(second)
    assert read_shards(merged) == expected
    assert report.counts.ingested == len(expected)
    assert len(list((merged / "shards").glob("*.tar"))) == 1
    assert not list((merged / ".scratch").glob("*")), "the decompressed copy of the .tar.gz is removed"


def test_files_named_by_a_glob_are_grouped_like_a_folder(corpus: Path, tmp_path: Path):
    ingest(corpus / "photos", dataset=tmp_path / "folder")
    ingest(str(corpus / "photos" / "*"), dataset=tmp_path / "glob")
    assert read_shards(tmp_path / "glob") == read_shards(tmp_path / "folder")
    one = next(iter(sorted((corpus / "sounds").glob("*.mp3"))))
    report = ingest(one, dataset=tmp_path / "one")
    assert report.counts.ingested == 1


def test_a_file_is_stored_under_the_extension_of_the_format_it_is_in(corpus: Path, tmp_path: Path):
    """A WAV named .mp3 (or a PNG named .jpg) goes into the shard as .wav (.png), so that readers that go by
    the extension decode it; its bytes are untouched, and a file that says what it is keeps its name."""
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    wav = sorted((corpus / "speech").glob("*.wav"))[0]
    png = sorted((corpus / "clipart").glob("*.png"))[0]
    jpg = sorted((corpus / "photos").glob("*.jpg"))[0]
    (mixed / "speech.mp3").write_bytes(wav.read_bytes())
    (mixed / "drawing.jpg").write_bytes(png.read_bytes())
    (mixed / "photo.jpeg").write_bytes(jpg.read_bytes())
    report = ingest(mixed, dataset=tmp_path / "ds")
    assert report.counts.ingested == 3
    stored = {ext: data for members in read_shards(tmp_path / "ds").values() for ext, data in members.items()}
    assert stored == {"wav": wav.read_bytes(), "png": png.read_bytes(), "jpg": jpg.read_bytes()}
    rows = {Path(r["source"]).name: r for r in read_table(tmp_path / "ds" / "samples")}
    assert rows["speech.mp3"]["members"] == ["wav"] and rows["drawing.jpg"]["members"] == ["png"]
