"""JPEGs through libjpeg-turbo (mmindex.jpeg): the pixels Pillow gives, at full size and DCT-scaled; every file
it does not read as Pillow would goes Pillow's way, and a refused file is refused for Pillow's reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from mmindex import jpeg
from mmindex.demo import CORPUS
from mmindex.encoders.inputs import load_rgb
from mmindex.jpeg import Need
from mmindex.media import Limits, Rejected, inspect_image

LIMITS = Limits()
PHOTO = np.asarray(Image.open(CORPUS / "photos" / "astronaut.jpg").convert("RGB"))


def encoded(pixels: np.ndarray | Image.Image, fmt: str = "JPEG", **params) -> bytes:
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def photo(width: int, height: int, **params) -> bytes:
    return encoded(Image.fromarray(PHOTO).resize((width, height), Image.Resampling.BICUBIC), quality=90, **params)


def with_exif(data: bytes, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(Image.open(io.BytesIO(data)), quality=95, exif=exif)


def fast(data: bytes, need: Need | None = None) -> np.ndarray | None:
    header = jpeg.plain_header(data, LIMITS.max_image_pixels)
    return jpeg.decode_rgb(data, header, need) if header else None


@pytest.mark.parametrize("data", [
    photo(451, 300), photo(300, 451, progressive=True), photo(256, 256, subsampling=0),
    encoded(Image.fromarray(PHOTO).convert("L"))], ids=["420", "progressive", "444", "grey"])
def test_full_size_pixels_are_pillows(data):
    np.testing.assert_array_equal(fast(data), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@pytest.mark.parametrize(("size", "need", "scale"), [
    ((2048, 1536), Need(short=224), 4), ((2048, 1536), Need(short=160), 8), ((512, 512), Need(short=224), 2),
    ((512, 384), Need(short=256), 1), ((2048, 1536), Need(long=224), 8), ((1024, 768), Need(short=256), 2)])
def test_dct_scaled_pixels_are_pillows_draft_mode_at_the_smallest_scale_that_meets_the_need(size, need, scale):
    data = photo(*size)
    pixels = fast(data, need)
    assert pixels.shape == (-(-size[1] // scale), -(-size[0] // scale), 3)
    drafted = Image.open(io.BytesIO(data))
    drafted.draft("RGB", (size[0] // scale, size[1] // scale))
    np.testing.assert_array_equal(pixels, np.asarray(drafted.convert("RGB")))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_pixels_as_pillow_does(orientation):
    data = with_exif(photo(96, 64), orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(fast(data), expected)


def mpo() -> bytes:
    first, second = Image.fromarray(PHOTO[:64, :64]), Image.fromarray(PHOTO[64:128, :64])
    return encoded(first, "MPO", save_all=True, append_images=[second])


@pytest.mark.parametrize("data", [
    encoded(Image.fromarray(PHOTO[:64, :64]).convert("CMYK")),
    encoded(PHOTO[:64, :64], "PNG"),
    encoded(PHOTO[:64, :64], xmp=b'<x:xmpmeta><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'),
    mpo(),
    with_exif(photo(64, 64), 6).replace(b"Exif\0\0MM", b"Exif\0\0XX"),
], ids=["cmyk", "png", "xmp-orientation", "mpo", "damaged-exif"])
def test_files_pillow_reads_differently_go_pillows_way(data):
    assert jpeg.plain_header(data, LIMITS.max_image_pixels) is None
    reference = Image.open(io.BytesIO(data))
    expected = ImageOps.exif_transpose(reference).convert("RGB")
    np.testing.assert_array_equal(np.asarray(load_rgb(data)), np.asarray(expected))


def test_a_truncated_jpeg_is_refused_for_pillows_reason_by_embed_and_ingest():
    data = photo(451, 300)[:5000]
    assert jpeg.plain_header(data, LIMITS.max_image_pixels) is not None and not jpeg.ends_whole(data)
    assert fast(data) is None
    for check in (load_rgb, lambda d: inspect_image(d, LIMITS)):
        with pytest.raises(Rejected) as refused:
            check(data)
        assert refused.value.reason == "truncated image"


def test_a_decompression_bomb_is_refused_from_its_header():
    data = bytearray(photo(64, 48))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2   # declares 60,000 x 60,000 pixels
    for limits in (LIMITS, Limits(max_image_pixels=3_000_000_000)):
        assert jpeg.plain_header(bytes(data), limits.max_image_pixels) is None
        with pytest.raises(Rejected) as refused:
            inspect_image(bytes(data), limits)
        assert refused.value.reason == "image too large"


def test_ingest_records_what_pillow_records():
    for data in (photo(451, 300), photo(300, 451, progressive=True), with_exif(photo(96, 64), 6)):
        image = Image.open(io.BytesIO(data))
        assert inspect_image(data, LIMITS) == {"image_format": "jpeg", "width": image.width, "height": image.height}
