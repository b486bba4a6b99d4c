"""Plain JPEGs read by libjpeg-turbo through simplejpeg: the GIL released, no Pillow Python in the loop, and decoded
at the smallest DCT scale that a resize can still start from.

Only files that libjpeg-turbo decodes as Pillow would take this path: a JPEG (not a multi-picture MPO) in YCbCr,
grey or RGB, within the pixel limit, whose orientation (if any) is in its EXIF block. Everything else, and any file
that libjpeg-turbo reports a problem with (strict mode: a truncated file raises), returns None, and the caller
takes Pillow's path, which decides and words every refusal (mmindex.media). So a file is refused for the same
reason whichever path reads it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from math import ceil

import numpy as np
import simplejpeg

SOI = b"\xff\xd8\xff"
EOI = b"\xff\xd9"
COLOURS = ("YCbCr", "Gray", "RGB")   # libjpeg-turbo's CMYK/YCCK conversion is not Pillow's: those go to Pillow
SCALES = (8, 4, 2)                   # libjpeg-turbo's 3/8, 5/8 ... 7/8 scales cost more than a full decode
_EXIF, _XMP, _MPF = b"Exif\0\0", b"http://ns.adobe.com/xap/1.0/", b"MPF\0"
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class Need:
    """The smallest decoded size a resize can start from without upscaling: its shortest and longest side."""

    short: int = 0
    long: int = 0


@dataclass(frozen=True)
class Header:
    """A plain JPEG's stored size (before orientation) and its EXIF orientation (1: as stored)."""

    width: int
    height: int
    orientation: int


def plain_header(data: bytes, max_pixels: int) -> Header | None:
    """The header of a JPEG that this module decodes as Pillow would, or None (see the module's docstring)."""
    if not data.startswith(SOI):
        return None
    orientation = _orientation(data)
    if orientation is None:
        return None
    try:
        height, width, colour, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colour not in COLOURS or width * height > max_pixels:
        return None
    return Header(width, height, orientation)


def ends_whole(data: bytes) -> bool:
    """Whether the file ends with its end-of-image marker (a cut-off file does not): ingest's test for truncation,
    and the device decoder's, which may not report it."""
    return data.rstrip(b"\0").endswith(EOI)


def decode_rgb(data: bytes, header: Header, need: Need | None) -> np.ndarray | None:
    """Height x width x 3 uint8 pixels as displayed (orientation applied), decoded at 1/8, 1/4 or 1/2 scale where
    the result still meets ``need`` (None: full size); None if libjpeg-turbo reports any problem."""
    short, long = sorted((header.width, header.height))
    scale = next((s for s in SCALES if need and ceil(short / s) >= need.short and ceil(long / s) >= need.long), 1)
    try:
        pixels = simplejpeg.decode_jpeg(data, "RGB", min_height=ceil(header.height / scale),
                                        min_width=ceil(header.width / scale))
    except ValueError:
        return None
    return oriented(pixels, header.orientation)


def oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels turned as EXIF orientation 1-8 says (what Pillow's ImageOps.exif_transpose does)."""
    turned = {2: pixels[:, ::-1], 3: pixels[::-1, ::-1], 4: pixels[::-1], 5: pixels.transpose(1, 0, 2),
              6: pixels.transpose(1, 0, 2)[:, ::-1], 7: pixels.transpose(1, 0, 2)[::-1, ::-1],
              8: pixels.transpose(1, 0, 2)[::-1]}.get(orientation)
    return pixels if turned is None else np.ascontiguousarray(turned)


def _orientation(data: bytes) -> int | None:
    """The EXIF orientation from the segments before the image data (1 if none), or None where Pillow would read
    the file differently (a multi-picture file, an orientation in XMP, two EXIF blocks) or they do not parse."""
    orientation, exif, at = 1, False, 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:       # fill byte
            at += 1
            continue
        if marker == 0xDA:       # start of scan: the segments are over
            return orientation
        length = int.from_bytes(data[at + 2:at + 4], "big")
        segment = data[at + 4:at + 2 + length]
        if marker == 0xE1 and segment.startswith(_EXIF):
            orientation = None if exif else _exif_orientation(segment[len(_EXIF):])
            if orientation is None:
                return None
            exif = True
        elif (marker == 0xE1 and segment.startswith(_XMP) and b"Orientation" in segment) or (
                marker == 0xE2 and segment.startswith(_MPF)):
            return None
        at += 2 + length
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """Tag 0x0112 of the first IFD of a TIFF-structured EXIF block (1 if absent; None if the block is damaged)."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    try:
        (first,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, first)
        for entry in range(first + 2, first + 2 + 12 * count, 12):
            tag, kind, _, value = struct.unpack_from(order + "HHIH", tiff, entry)
            if tag == _ORIENTATION_TAG:
                return value if kind == 3 and 1 <= value <= 8 else None
    except struct.error:
        return None
    return 1
