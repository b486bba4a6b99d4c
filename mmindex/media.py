"""What counts as a valid image, audio clip, text or metadata file, and why a file is refused (which file
types are which: mmindex.modalities).

Every check reads the whole payload (images are decoded, audio is decoded to the end), because a
header that parses says nothing about a truncated body. Limits guard against decompression bombs.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import soundfile
from PIL import Image, UnidentifiedImageError

from mmindex import jpeg

warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # see inspect_image
_MPEG_FRAME_SYNC = re.compile(rb"\xff[\xe0-\xff]")


class Rejected(Exception):
    """An input that cannot be ingested: ``reason`` is a short category, ``detail`` says what exactly."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self):  # crosses process boundaries (decode processes) intact
        return Rejected, (self.reason, self.detail)


@dataclass(frozen=True)
class Limits:
    """Bounds that keep hostile or broken files from exhausting memory or time."""

    max_file_bytes: int = 512 * 2**20
    max_image_pixels: int = 100_000_000
    max_text_bytes: int = 64 * 2**10
    max_audio_seconds: float = 3 * 3600.0


def open_image(data: bytes, limits: Limits) -> Image.Image:
    """An image opened from its header alone, or Rejected if it declares more pixels than the limit (a
    decompression bomb is refused before anything is decoded). Call inside ``image_errors()``."""
    # Pillow's own guard refuses twice our limit inside open(); our check below refuses the rest with a
    # clearer reason, so its warning is silenced (in the module: catch_warnings is not thread-safe).
    Image.MAX_IMAGE_PIXELS = limits.max_image_pixels
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:  # its message names twice our limit
        raise Rejected("image too large", f"it declares more than twice the limit of {limits.max_image_pixels:,} "
                       f"pixels (a decompression bomb?)") from None
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise Rejected("image too large", f"{width}x{height} pixels is over the limit of "
                       f"{limits.max_image_pixels:,} (a decompression bomb?)")
    return image


def inspect_image(data: bytes, limits: Limits) -> dict[str, Any]:
    """Checks an image; returns its format and size, or raises Rejected.

    A plain JPEG that ends with its end-of-image marker is checked from its structure alone (mmindex.jpeg: its
    segments up to the image data, its tables and declared size read by libjpeg-turbo, within the pixel limit):
    decoding it as well refused 1 in 200 whole-looking files with damaged image data, which Pillow decodes anyway,
    and cost two thirds of ingest's CPU. Any other file is decoded through Pillow, which words the refusal."""
    header = jpeg.plain_header(data, limits.max_image_pixels)
    if header is not None and jpeg.ends_whole(data):
        return {"image_format": "jpeg", "width": header.width, "height": header.height}
    with image_errors():
        image = open_image(data, limits)
        width, height = image.size
        # JPEGs decode at 1/8 scale: every byte of the entropy-coded data is still read and
        # checked (truncation and corruption are caught) for a fraction of the work.
        image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
        image.load()
    return {"image_format": (image.format or "").lower(), "width": width, "height": height}


def open_audio(data: bytes) -> soundfile.SoundFile:
    """A decoder over the clip's bytes.

    libsndfile gives up on MP3s whose ID3 tag is followed by padding or a damaged first frame, which other
    players skip; for those, decoding restarts at the first MPEG frame sync after the tag (the stored bytes
    are left as they are).
    """
    try:
        return soundfile.SoundFile(io.BytesIO(data))
    except soundfile.LibsndfileError:
        if data[:3] != b"ID3" or len(data) < 10:
            raise
        tag_end = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
        sync = _MPEG_FRAME_SYNC.search(data, tag_end, tag_end + 65536)
        if sync is None:
            raise
        return soundfile.SoundFile(io.BytesIO(data[sync.start():]))


@contextlib.contextmanager
def image_errors() -> Iterator[None]:
    """Turns Pillow's many ways of failing into Rejected with a reason a person reads."""
    try:
        yield
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected("unreadable image", "not an image in any format Pillow reads") from None
    except Image.DecompressionBombError as err:
        raise Rejected("image too large", str(err)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated image" if "truncated" in str(err).lower() else "corrupt image"
        raise Rejected(reason, str(err) or type(err).__name__) from None


@contextlib.contextmanager
def audio_errors() -> Iterator[None]:
    """Turns a decoder's exceptions into Rejected, with a detail that is the same on every run."""
    try:
        yield
    except Rejected:
        raise
    except soundfile.LibsndfileError as err:
        # error_string, not str(err): the latter names the buffer's memory address, which changes every run
        raise Rejected("unreadable audio", err.error_string) from None
    except (RuntimeError, TypeError, ValueError) as err:
        raise Rejected("unreadable audio", str(err)) from None


def check_clip(clip: soundfile.SoundFile, limits: Limits) -> None:
    """Refuses a clip whose header declares no usable rate or a length over the limit, before decoding it."""
    if clip.samplerate <= 0:
        raise Rejected("unreadable audio", f"sample rate {clip.samplerate} Hz")
    if clip.frames / clip.samplerate > limits.max_audio_seconds:
        raise Rejected("audio too long", f"{clip.frames / clip.samplerate:,.0f} s is over the limit of "
                       f"{limits.max_audio_seconds:,.0f} s")


def inspect_audio(data: bytes, limits: Limits) -> dict[str, Any]:
    """Decodes an audio clip to the end; returns duration and sample rate, or raises Rejected."""
    with audio_errors(), open_audio(data) as clip:
        check_clip(clip, limits)
        frames = sum(len(block) for block in clip.blocks(blocksize=65536, dtype="float32"))
        rate, channels, audio_format = clip.samplerate, clip.channels, clip.format.lower()
    if frames == 0:
        raise Rejected("empty audio", "the clip has no samples")
    return {"audio_format": audio_format, "sample_rate": rate, "channels": channels,
            "duration_s": round(frames / rate, 4)}


def decode_text(data: bytes, limits: Limits) -> str:
    """The text of a caption or text file: strict UTF-8 (a BOM is dropped), within the size limit."""
    if len(data) > limits.max_text_bytes:
        raise Rejected("text too long", f"{len(data):,} bytes is over the limit of {limits.max_text_bytes:,}")
    return decode_utf8(data)


def decode_utf8(data: bytes) -> str:
    """Strict UTF-8, a byte-order mark dropped: the one way mmindex reads text, at ingest and when embedding."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise Rejected("text not UTF-8", f"invalid byte at offset {err.start}") from None


def parse_metadata(data: bytes, limits: Limits) -> dict[str, Any]:
    """A metadata file must hold one JSON object."""
    text = decode_text(data, limits)
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise Rejected("invalid JSON metadata", str(err)[:200]) from None
    if not isinstance(value, dict):
        raise Rejected("invalid JSON metadata", f"expected a JSON object, found {type(value).__name__}")
    return value
