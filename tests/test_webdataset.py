"""The webdataset side of the format: the key rule, and shard tars byte-identical to what tarfile writes."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from mmindex.webdataset import split_key, write_tar


def tarfile_bytes(samples: list[tuple[str, dict[str, bytes]]]) -> bytes:
    """What Python's tarfile writes for the same members (USTAR, mtime 0, mode 644, no owner)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            for ext in sorted(members):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(members[ext]), 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(members[ext]))
    return buffer.getvalue()


@pytest.mark.parametrize("key", ["0123456789abcdef0123", "k" * 90, "folder/sub/" + "x" * 80, "naïve", ""])
def test_shards_are_the_bytes_tarfile_writes(key):
    rng = random.Random(key)
    sizes = [0, 1, 511, 512, 513, 5000, 70000, 1 << 20]  # members are gathered into writes of about 1 MB
    samples = [(f"{key}{i}", {ext: rng.randbytes(rng.choice(sizes))
                             for ext in rng.sample(["jpg", "txt", "json", "flac"], rng.randint(1, 3))})
               for i in range(rng.randint(1, 30))]
    written = io.BytesIO()
    write_tar(written, samples)
    assert written.getvalue() == tarfile_bytes(samples)


def test_many_small_members_are_the_bytes_tarfile_writes():
    rng = random.Random(0)
    samples = [(f"k{i:04d}", {"txt": rng.randbytes(rng.randint(0, 6000))}) for i in range(600)]  # several writes
    written = io.BytesIO()
    write_tar(written, samples)
    assert written.getvalue() == tarfile_bytes(samples)


def test_an_empty_shard_is_an_empty_tar():
    written = io.BytesIO()
    write_tar(written, [])
    assert written.getvalue() == tarfile_bytes([])


@pytest.mark.parametrize(("name", "expected"), [
    ("abc.jpg", ("abc", "jpg")), ("dir/abc.seg.txt", ("dir/abc", "seg.txt")), ("a.b/c.d.json", ("a.b/c", "d.json")),
    ("noext", ("noext", "")),
])
def test_the_key_ends_at_the_file_names_first_dot(name, expected):
    assert split_key(name) == expected
