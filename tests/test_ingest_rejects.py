"""Bad and hostile inputs land in rejects with a reason; the good samples beside them are ingested."""

from __future__ import annotations

import io
import os
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from conftest import ingest, read_shards, read_table
from mmindex.demo import CORPUS

PHOTO = next(p for p in sorted((CORPUS / "photos").glob("*.jpg")))
SOUND = next(p for p in sorted((CORPUS / "sounds").glob("*.mp3")))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A folder and a tar mixing good samples with every kind of bad input; returns expected reasons."""
    root = tmp_path / "in"
    root.mkdir()
    photo = PHOTO.read_bytes()
    expected: dict[str, str] = {}

    def bad(name: str, data: bytes, reason: str) -> None:
        (root / name).write_bytes(data)
        expected[str(root / name)] = reason

    shutil.copy(PHOTO, root / "good_photo.jpg")
    (root / "good_photo.txt").write_text("a good photo")
    shutil.copy(SOUND, root / "good_sound.mp3")
    (root / "good_text.txt").write_text("a text sample on its own")
    bad("truncated.jpg", photo[: len(photo) // 2], "truncated image")
    bad("empty.jpg", b"", "empty file")
    bad("notes.jpg", b"this is a text file named .jpg\n", "unreadable image")
    bad("noise.ogg", os.urandom(4096), "unreadable audio")
    bad("bomb.png", png_declaring(60_000, 60_000), "image too large")
    bad("model.pkl", b"\x80\x04K\x01.", "refused pickle-like file")
    bad("notes.md", b"# readme", "unsupported file type")
    # A sample is refused whole when one of its files is bad.
    (root / "latin1.jpg").write_bytes(photo[:-1] + b"\xd9")  # a distinct but valid photo
    (root / "latin1.txt").write_bytes("un café crème".encode("latin-1"))
    expected[str(root / "latin1.{jpg,txt}")] = "text not UTF-8"
    (root / "long.txt").write_text("word " * 1000)
    expected[str(root / "long.txt")] = "text too long"
    shutil.copy(PHOTO, root / "badmeta.jpg")
    (root / "badmeta.json").write_text("{not json")
    expected[str(root / "badmeta.{jpg,json}")] = "invalid JSON metadata"
    # A symlink to a perfectly good photo outside the source root.
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(PHOTO, outside / "secret.jpg")
    (root / "escape.jpg").symlink_to(outside / "secret.jpg")
    expected[str(root / "escape.jpg")] = "symlink leaves the source"
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    expected[str(root / "dangling.jpg")] = "broken symlink"

    tar_path = tmp_path / "hostile.tar"
    tar_path.write_bytes(tar_with([
        member("t1.jpg", photo[:-2] + b"\xff\xd9"), member("t1.txt", b"a photo from a tar"),
        member("/etc/abs.jpg", photo), member("../../up.jpg", photo),
        member("link.jpg", kind=tarfile.SYMTYPE, link="/etc/passwd"),
        member("hard.jpg", kind=tarfile.LNKTYPE, link="t1.jpg"),
        member("state.pyd", b"\x80\x04."),
    ]))
    for name, reason in [("/etc/abs.jpg", "unsafe path in tar"), ("../../up.jpg", "unsafe path in tar"),
                         ("link.jpg", "link in tar"), ("hard.jpg", "link in tar"),
                         ("state.pyd", "refused pickle-like file")]:
        expected[f"{tar_path}::{name}"] = reason
    return root, tar_path, expected


def test_each_bad_input_is_rejected_with_its_reason(hostile, tmp_path: Path):
    root, tar_path, expected = hostile
    dataset = tmp_path / "ds"
    report = ingest(root, tar_path, dataset=dataset, extra=("--max-text-bytes=2000",))

    rejects = {r["source"]: r for r in read_table(dataset / "rejects")}
    for source, reason in expected.items():
        assert source in rejects, f"{source} was not recorded as rejected"
        assert rejects[source]["reason"] == reason, rejects[source]
        assert rejects[source]["detail"], "every reject says what exactly is wrong"
    assert set(rejects) == set(expected)

    sources = sorted(Path(r["source"]).name for r in read_table(dataset / "samples"))
    assert sources == ["good_photo.jpg", "good_sound.mp3", "good_text.txt", "hostile.tar::t1.{jpg,txt}"]
    assert len(read_shards(dataset)) == 4

    counts = report.counts
    assert counts.found == counts.ingested + counts.rejected + counts.duplicates
    assert counts.rejected == len(expected)
    assert sum(counts.rejected_by_reason.values()) == counts.rejected


def test_nothing_outside_the_root_is_read_through_a_manifest(tmp_path: Path):
    root = tmp_path / "m"
    root.mkdir()
    shutil.copy(PHOTO, root / "inside.jpg")
    shutil.copy(SOUND, tmp_path / "outside.mp3")
    manifest = root / "list.csv"
    manifest.write_text("image,audio,caption,license\n"
                        "inside.jpg,,a photo,cc0\n"
                        ",../outside.mp3,a sound from outside,\n"
                        f"{tmp_path / 'outside.mp3'},,absolute path,\n"
                        "missing.jpg,,gone,\n"
                        "too,many,fields,here,now\n")
    dataset = tmp_path / "ds"
    report = ingest(manifest, dataset=dataset)
    reasons = {r["source"].rsplit("#", 1)[1]: r["reason"] for r in read_table(dataset / "rejects")}
    assert reasons == {"row=3": "path leaves the manifest's folder", "row=4": "path leaves the manifest's folder",
                       "row=5": "missing file", "row=6": "invalid manifest row"}
    assert report.counts.ingested == 1


def test_a_fifo_is_never_opened(tmp_path: Path):
    root = tmp_path / "in"
    root.mkdir()
    shutil.copy(PHOTO, root / "photo.jpg")
    os.mkfifo(root / "pipe.jpg")  # reading it would block the run forever
    dataset = tmp_path / "ds"
    ingest(root, dataset=dataset)
    assert [r["reason"] for r in read_table(dataset / "rejects")] == ["not a regular file"]


def test_a_compressed_tar_bomb_is_refused_without_filling_memory_or_disk(tmp_path: Path):
    bomb = tmp_path / "bomb.tar.gz"
    zeros = 50 * 2**20
    with tarfile.open(bomb, "w:gz") as tar:
        info = tarfile.TarInfo("zeros.txt")
        info.size = zeros
        tar.addfile(info, io.BytesIO(bytes(zeros)))
    assert bomb.stat().st_size < zeros / 500
    dataset = tmp_path / "ds"
    report = ingest(bomb, dataset=dataset, extra=("--max-file-bytes=1000000",))
    (reject,) = read_table(dataset / "rejects")
    assert (reject["source"], reject["reason"]) == (str(bomb), "decompression bomb")
    assert report.counts.found == report.counts.rejected == 1
    assert not list((dataset / ".scratch").iterdir()), "nothing decompressed is left behind"


def test_file_names_that_are_not_utf8_are_ingested_and_shown_readably(tmp_path: Path):
    root = tmp_path / "in"
    root.mkdir()
    odd = os.fsdecode(b"caf\xe9")  # a Latin-1 file name, as old archives have
    shutil.copy(PHOTO, root / f"{odd}.jpg")
    (root / f"{odd}.txt").write_text("a photo with an odd name")
    tar_path = tmp_path / "odd.tar"
    tar_path.write_bytes(tar_with([member(f"{odd}.mp3", SOUND.read_bytes())]))
    dataset = tmp_path / "ds"
    report = ingest(root, tar_path, dataset=dataset)
    assert report.counts.ingested == 2
    assert sorted(r["source"] for r in read_table(dataset / "samples")) == [
        str(root / "caf\\xe9.jpg"), f"{tar_path}::caf\\xe9.mp3"]


def test_one_bad_manifest_row_does_not_cost_the_others(tmp_path: Path):
    root = tmp_path / "m"
    root.mkdir()
    shutil.copy(PHOTO, root / "a.jpg")
    shutil.copy(SOUND, root / "b.mp3")
    (root / "latin1.csv").write_bytes("image,caption\na.jpg,un café\nb.mp3,a sound\n".encode("latin-1"))
    (root / "long.csv").write_text("image,caption\na.jpg," + "x" * 200_000 + "\nb.mp3,another sound\n")
    dataset = tmp_path / "ds"
    report = ingest(root / "latin1.csv", root / "long.csv", dataset=dataset)
    reasons = {r["source"].rsplit("/", 1)[1]: r["reason"] for r in read_table(dataset / "rejects")}
    assert reasons == {"latin1.csv#row=2": "text not UTF-8", "long.csv#row=2": "text too long"}
    assert report.counts.ingested == 2


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path):
    root = tmp_path / "in"
    root.mkdir()
    with open(root / "huge.wav", "wb") as f:
        f.truncate(2**30)  # sparse: 1 GiB that takes no disk and, read, would take 1 GiB of memory
    shutil.copy(SOUND, root / "fine.mp3")
    dataset = tmp_path / "ds"
    report = ingest(root, dataset=dataset)
    (reject,) = read_table(dataset / "rejects")
    assert (Path(reject["source"]).name, reject["reason"]) == ("huge.wav", "file too large")
    assert report.counts.ingested == 1
