"""`mmindex check`: every committed file against its recorded size and sha256, and the repair of what can be
rebuilt (shards from their sources, embeddings, indexes), on a real ingest, embed and index."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import embed, file_digests, ingest, read_table
from mmindex.cli import app
from mmindex.demo import CORPUS
from mmindex.index.run import IndexSettings, build_indexes

runner = CliRunner()
PHOTOS = ("chelsea_cat", "coffee", "camera", "astronaut")


def small_corpus(folder: Path) -> Path:
    """Four captioned photos, a text, and a broken image (so that the dataset has a rejects parquet)."""
    folder.mkdir(parents=True)
    for stem in PHOTOS:
        for path in (CORPUS / "photos").glob(f"{stem}.*"):
            shutil.copy(path, folder)
    shutil.copy(CORPUS / "texts" / "airplane.txt", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip) -> tuple[Path, str]:
    """A dataset in 3 shards, embedded with a tiny CLIP and indexed (image and text), and the space's name: shared,
    copy it to change it."""
    root = tmp_path_factory.mktemp("built")
    dataset = root / "dataset"
    ingest(small_corpus(root / "corpus"), dataset=dataset, extra=("--shard-size=2",))
    embed(dataset, str(tiny_clip), decode_workers=0)
    build_indexes(IndexSettings(str(dataset), str(tiny_clip)))
    return dataset, tiny_clip.resolve().name


@pytest.fixture
def dataset(built, tmp_path) -> Path:
    return Path(shutil.copytree(built[0], tmp_path / "dataset"))


def check(dataset: Path | str, *extra: str):
    return runner.invoke(app, ["check", str(dataset), *extra])


def generation(dataset: Path, space: str, modality: str) -> Path:
    folder = dataset / "indexes" / space / modality
    return folder / (folder / "CURRENT").read_text().strip()


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "bit-flipped":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1:])
    else:
        path.unlink()


FILES = {
    "shard tar": lambda d, s: d / "shards" / "000001.tar",
    "samples parquet": lambda d, s: d / "samples" / "000001.parquet",
    "rejects parquet": lambda d, s: next((d / "rejects").glob("*.parquet")),
    "embeddings npy": lambda d, s: d / "embeddings" / s / "image" / "000001.npy",
    "embeddings parquet": lambda d, s: d / "embeddings" / s / "000001.parquet",
    "index.faiss": lambda d, s: generation(d, s, "text") / "index.faiss",
    "keys.arrow": lambda d, s: generation(d, s, "image") / "keys.arrow",
    "info.json": lambda d, s: generation(d, s, "image") / "info.json",
}
REPAIRS = {"shard tar": "--repair` rebuilds it from its sources", "samples parquet": "restore it from a copy",
           "rejects parquet": "restore it from a copy", "embeddings npy": "--repair` embeds shard 000001 again",
           "embeddings parquet": "--repair` embeds shard 000001 again", "index.faiss": "--repair` rebuilds the index",
           "keys.arrow": "--repair` rebuilds the index", "info.json": "--repair` rebuilds the index"}


def test_a_clean_dataset_checks_ok(built):
    dataset, _ = built
    result = check(dataset)
    assert result.exit_code == 0, result.output
    # 3 tars + 3 samples + 1 rejects + (3 parquet + 3 image + 3 text .npy) + 2 indexes x 3 files
    assert "Checked 22 files" in result.output and "all as recorded" in result.output
    assert result.output.count("\n") == 1, "one summary line, nothing else"


@pytest.mark.parametrize("how", ["truncated", "bit-flipped", "missing"])
@pytest.mark.parametrize("kind", list(FILES))
def test_each_damaged_file_is_named_with_its_repair(built, dataset, kind, how):
    path = FILES[kind](dataset, built[1])
    damage(path, how)
    result = check(dataset)
    assert result.exit_code == 1, result.output
    line = next(line for line in result.output.splitlines() if line.startswith(f"damaged {path}:"))
    expected = {"truncated": "wrong size", "bit-flipped": "wrong sha256", "missing": "missing"}[how]
    assert f": {expected}" in line and REPAIRS[kind] in line, line
    assert result.output.splitlines()[-1].endswith("damaged")


def test_repair_restores_shards_byte_for_byte_and_re_embeds_and_rebuilds(built, dataset):
    space = built[1]
    before = file_digests(dataset / "shards")
    vectors_before = (dataset / "embeddings" / space / "image" / "000001.npy").read_bytes()
    damage(dataset / "shards" / "000000.tar", "bit-flipped")
    damage(dataset / "shards" / "000002.tar", "missing")
    damage(dataset / "embeddings" / space / "image" / "000001.npy", "bit-flipped")
    damage(generation(dataset, space, "text") / "index.faiss", "truncated")

    result = check(dataset, "--repair")
    assert result.exit_code == 0, result.output
    assert f"repaired rebuilt {dataset}/shards/000000.tar from its sources" in result.output
    assert f"repaired rebuilt {dataset}/shards/000002.tar from its sources" in result.output
    assert "repaired embedded 1 shard again" in result.output and "repaired rebuilt the image, text" in result.output
    assert result.output.splitlines()[-1].endswith("and repaired: all as recorded")
    assert file_digests(dataset / "shards") == before, "the rebuilt tars are the ingested ones, byte for byte"
    assert (dataset / "embeddings" / space / "image" / "000001.npy").read_bytes() == vectors_before
    assert check(dataset).exit_code == 0


def test_re_embedded_vectors_are_indexed_again_though_the_index_files_were_whole(built, dataset):
    """The indexes hold the damaged vectors too: rebuilt whenever a space is embedded again, damaged or not."""
    space = built[1]
    damage(dataset / "embeddings" / space / "text" / "000001.npy", "bit-flipped")
    before = {m: generation(dataset, space, m).name for m in ("image", "text")}
    result = check(dataset, "--repair")
    assert result.exit_code == 0, result.output
    assert "repaired rebuilt the image, text indexes" in result.output
    assert {m: generation(dataset, space, m).name for m in ("image", "text")} != before
    assert check(dataset).exit_code == 0


@pytest.mark.parametrize("source", ["tar", "manifest"])
def test_shards_ingested_from_tars_and_manifests_are_rebuilt_byte_for_byte(built, tmp_path, source):
    if source == "tar":
        src = str(built[0] / "shards" / "*.tar")
    else:
        corpus = small_corpus(tmp_path / "corpus")
        rows = [f"{stem}.jpg,{(corpus / f'{stem}.txt').read_text().strip()}" for stem in PHOTOS]
        (corpus / "photos.csv").write_text("image,caption\n" + "\n".join(rows) + "\n")
        src = str(corpus / "photos.csv")
    dataset = tmp_path / "dataset"
    ingest(src, dataset=dataset, extra=("--shard-size=2",))
    before = file_digests(dataset / "shards")
    damage(dataset / "shards" / "000001.tar", "bit-flipped")
    damage(dataset / "shards" / "000000.tar", "missing")
    result = check(dataset, "--repair")
    assert result.exit_code == 0, result.output
    assert file_digests(dataset / "shards") == before


def test_sources_gone_or_changed_are_listed_as_lost_samples(tmp_path):
    corpus = small_corpus(tmp_path / "corpus")
    dataset = tmp_path / "dataset"
    ingest(corpus, dataset=dataset, extra=("--shard-size=2",))
    rows = {r["source"]: (r["key"], r["shard"]) for r in read_table(dataset / "samples")}
    gone, changed = str(corpus / "coffee.jpg"), str(corpus / "airplane.txt")
    Path(gone).unlink()
    Path(changed).write_text("an aeroplane, said differently")
    tars = {rows[gone][1], rows[changed][1]}
    for shard in tars:
        damage(dataset / "shards" / f"{shard}.tar", "bit-flipped")
    damaged = {shard: (dataset / "shards" / f"{shard}.tar").read_bytes() for shard in tars}

    result = check(dataset, "--repair")
    assert result.exit_code == 1, result.output
    assert f"lost shard {rows[gone][1]} sample {rows[gone][0]}: {gone} (source gone)" in result.output
    assert f"lost shard {rows[changed][1]} sample {rows[changed][0]}: {changed} (source changed)" in result.output
    assert "still damaged" in result.output and "not rebuilt" in result.output
    for shard, data in damaged.items():
        assert (dataset / "shards" / f"{shard}.tar").read_bytes() == data, "nothing is replaced by a partial shard"


def test_a_dataset_from_before_checksums_is_told_how_to_record_them(built, dataset):
    space = built[1]
    shutil.rmtree(dataset / "checksums")
    for modality in ("image", "text"):
        (generation(dataset, space, modality) / "checksums.json").unlink()
    result = check(dataset)
    assert result.exit_code == 0, result.output
    unrecorded = [line for line in result.output.splitlines() if line.startswith("unrecorded ")]
    assert len(unrecorded) == 22 and all("--repair` records it" in line for line in unrecorded)

    assert check(dataset, "--repair").exit_code == 0
    assert json.loads((dataset / "checksums" / "shards" / "000000.json").read_text())["files"]
    damage(dataset / "shards" / "000000.tar", "bit-flipped")
    assert "wrong sha256" in check(dataset).output, "recorded now, so a changed byte is found"


def test_a_damaged_record_is_reported_and_recorded_again(built, dataset):
    record = dataset / "checksums" / "shards" / "000001.json"
    record.write_text("{not json")
    result = check(dataset)
    assert result.exit_code == 1 and f"damaged {record}: unreadable checksum record" in result.output
    assert check(dataset, "--repair").exit_code == 0
    assert check(dataset).exit_code == 0


def test_a_record_naming_a_file_outside_the_dataset_is_refused_not_followed(built, dataset, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"not the dataset's")
    record = dataset / "checksums" / "shards" / "000001.json"
    document = json.loads(record.read_text())
    document["files"]["../../secret"] = {"bytes": 17, "sha256": "0" * 64}
    record.write_text(json.dumps(document))
    result = check(dataset)
    assert result.exit_code == 1
    assert f"damaged {record}: unreadable checksum record (it names a file outside the dataset" in result.output
    assert "secret" not in result.output.replace("'../../secret'", "")


def test_embed_refuses_a_shard_tar_whose_size_is_not_the_recorded_one(built, dataset, tiny_clip):
    """Damage that still parses: zero blocks appended to a tar leave a valid tar, and embed used it without a word."""
    shutil.rmtree(dataset / "embeddings")  # so that embed reads every shard again
    tar = dataset / "shards" / "000001.tar"
    tar.write_bytes(tar.read_bytes() + bytes(10240))
    result = runner.invoke(app, ["embed", str(dataset), "--model", str(tiny_clip), "--decode-workers", "0"])
    assert result.exit_code == 1
    assert f"shard 000001 is damaged ({tar}: {tar.stat().st_size:,} bytes" in result.output
    assert f"run `mmindex check {dataset} --repair`" in result.output


@pytest.mark.parametrize("command", ["eval", "index"])
def test_eval_and_index_refuse_vectors_with_bytes_appended(built, dataset, tiny_clip, command):
    """A .npy with bytes appended still loads (its header gives the shape): the size check now refuses it."""
    vectors = dataset / "embeddings" / built[1] / "text" / "000002.npy"
    vectors.write_bytes(vectors.read_bytes() + b"appended")
    result = runner.invoke(app, [command, str(dataset), "--model", str(tiny_clip)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {vectors} is damaged (") and "recorded)" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["search", "eval"])
def test_search_and_eval_name_a_damaged_samples_parquet_and_what_to_do(built, dataset, tiny_clip, command):
    samples = dataset / "samples" / "000001.parquet"
    damage(samples, "truncated")
    args = ["search", "a cat", "--dataset", str(dataset)] if command == "search" else ["eval", str(dataset)]
    result = runner.invoke(app, [*args, "--model", str(tiny_clip)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: {samples} is damaged (") and f"`mmindex check {dataset}`" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_search_refuses_an_index_file_with_bytes_appended(built, dataset, tiny_clip):
    """FAISS reads such a file without complaint; the size check at load now refuses it, with the repair."""
    index = generation(dataset, built[1], "text") / "index.faiss"
    index.write_bytes(index.read_bytes() + b"appended")
    result = runner.invoke(app, ["search", "a cat", "--dataset", str(dataset), "--model", str(tiny_clip)])
    assert result.exit_code == 2, result.output
    size = index.stat().st_size
    assert result.output.strip() == (f"Error: {index} is damaged ({size:,} bytes, {size - 8:,} recorded): rebuild it "
                                     f"with `mmindex index {dataset} --model {built[1]}`")


def test_check_and_repair_on_an_object_store(tmp_path):
    """The paths gs:// and s3:// users take: records, digests and a shard rebuilt from its sources through Beam's
    file systems (``mem://``)."""
    from memfs import MemoryFileSystem, upload

    MemoryFileSystem.objects.clear()
    try:
        upload(small_corpus(tmp_path / "corpus"), "mem://bucket/raw")
        ingest("mem://bucket/raw", dataset="mem://bucket/ds", extra=("--shard-size=2",))
        objects = MemoryFileSystem.objects
        assert "mem://bucket/ds/checksums/shards/000001.json" in objects
        assert check("mem://bucket/ds").exit_code == 0
        intact = objects["mem://bucket/ds/shards/000001.tar"]
        objects["mem://bucket/ds/shards/000001.tar"] = intact[:-1] + b"x"
        found = check("mem://bucket/ds")
        assert found.exit_code == 1 and "damaged mem://bucket/ds/shards/000001.tar: wrong sha256" in found.output
        assert check("mem://bucket/ds", "--repair").exit_code == 0
        assert objects["mem://bucket/ds/shards/000001.tar"] == intact
    finally:
        MemoryFileSystem.objects.clear()
