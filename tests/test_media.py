"""The checks behind each reject reason, on real media from the demo corpus and on crafted bad bytes."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import soundfile
from PIL import Image

from mmindex.demo import CORPUS
from mmindex.media import Limits, Rejected, decode_text, inspect_audio, inspect_image, parse_metadata

LIMITS = Limits()


def jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def png_with_damaged_pixels() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype="uint8")).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[len(data) // 2: len(data) // 2 + 50] = bytes(50)
    return bytes(data)


def test_real_photos_and_sounds_pass():
    photo = sorted((CORPUS / "photos").glob("*.jpg"))[0].read_bytes()
    info = inspect_image(photo, LIMITS)
    assert info["image_format"] == "jpeg" and info["width"] > 0
    for clip in sorted((CORPUS / "sounds").glob("*.mp3")) + sorted((CORPUS / "speech").glob("*.*"))[:4]:
        if clip.suffix == ".txt":
            continue
        info = inspect_audio(clip.read_bytes(), LIMITS)
        assert info["duration_s"] > 0.1 and info["sample_rate"] in (8000, 16000, 22050, 44100, 48000)


def test_image_pixel_limit_is_checked_before_decoding():
    with pytest.raises(Rejected, match="image too large"):
        inspect_image(jpeg((200, 100)), Limits(max_image_pixels=10_000))
    assert inspect_image(jpeg((100, 100)), Limits(max_image_pixels=10_000))["width"] == 100


@pytest.mark.parametrize(("data", "reason"), [
    (png_with_damaged_pixels(), "corrupt image"),
    (b"plain text", "unreadable image"),
    (jpeg()[:300], "truncated image"),
])
def test_broken_images(data, reason):
    with pytest.raises(Rejected) as err:
        inspect_image(data, LIMITS)
    assert err.value.reason == reason


def test_audio_duration_limit_and_truncation():
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(16000 * 3, dtype="float32"), 16000, format="WAV")
    with pytest.raises(Rejected, match="audio too long"):
        inspect_audio(buffer.getvalue(), Limits(max_audio_seconds=2))
    assert inspect_audio(buffer.getvalue(), LIMITS)["duration_s"] == 3.0
    with pytest.raises(Rejected, match="unreadable audio"):
        inspect_audio(b"RIFF" + b"\xff" * 100, LIMITS)


def test_text_must_be_utf8_and_within_limit():
    assert decode_text("\ufeffcafé".encode(), LIMITS) == "café"
    with pytest.raises(Rejected, match="not UTF-8"):
        decode_text(b"caf\xe9", LIMITS)
    with pytest.raises(Rejected, match="too long"):
        decode_text(b"x" * 11, Limits(max_text_bytes=10))


@pytest.mark.parametrize("data", [b"[1, 2]", b"{", b"[" * 100_000 + b"]" * 100_000])
def test_metadata_must_be_one_json_object(data):
    with pytest.raises(Rejected, match="invalid JSON metadata"):
        parse_metadata(data, Limits(max_text_bytes=10**6))


def test_reject_details_are_the_same_every_run():
    """A detail that changed between runs (a memory address, say) would make a repeated ingest write again."""
    noise = bytes(range(256)) * 8
    details = {(err.reason, err.detail) for err in (_rejected(inspect_audio, noise) for _ in range(3))}
    assert len(details) == 1 and "0x" not in next(iter(details))[1]


def _rejected(check, data: bytes) -> Rejected:
    with pytest.raises(Rejected) as err:
        check(data, LIMITS)
    return err.value


def test_damaged_real_media_is_rejected_with_a_reason_never_an_error():
    """Real files with bytes flipped, cut, zeroed or inserted: each passes or gets a specific reason."""
    from mmindex.ingest.records import Candidate, Member
    from mmindex.ingest.validate import inspect_candidate

    rng = random.Random(0)
    files = [p for p in sorted(CORPUS.rglob("*")) if p.suffix in (".jpg", ".png", ".wav", ".flac", ".mp3")]
    reasons = set()
    for _ in range(300):
        path = rng.choice(files)
        data = bytearray(path.read_bytes())
        at = rng.randrange(len(data))
        damage = rng.choice(["flip", "cut", "zero", "insert"])
        if damage == "flip":
            data[at] ^= 1 + rng.randrange(255)
        elif damage == "cut":
            del data[at:]
        elif damage == "zero":
            data[at: at + 4096] = bytes(len(data[at: at + 4096]))
        else:
            data[at:at] = rng.randbytes(64)
        candidate = Candidate(source=str(path), members=(Member(ext=path.suffix[1:], data=bytes(data)),))
        try:
            inspect_candidate(candidate, LIMITS)
        except Rejected as err:
            reasons.add(err.reason)
    assert reasons <= {"truncated image", "corrupt image", "unreadable image", "unreadable audio", "empty audio",
                       "empty file"}
    assert {"truncated image", "corrupt image", "unreadable audio"} <= reasons
