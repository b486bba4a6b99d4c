"""Decoding media for encoders: the pixels and samples a model should see, whatever the file's quirks."""

from __future__ import annotations

from math import gcd

import numpy as np
from PIL import Image, ImageOps

from mmindex import jpeg
from mmindex.jpeg import Need
from mmindex.media import Limits, Rejected, audio_errors, check_clip, image_errors, open_audio, open_image

WHITE = (255, 255, 255, 255)
DEFAULT_LIMITS = Limits()


def load_rgb(data: bytes, limits: Limits = DEFAULT_LIMITS, need: Need | None = None) -> Image.Image:
    """An RGB image as displayed: EXIF orientation applied, transparency composited onto white.

    A plain JPEG is decoded by libjpeg-turbo (mmindex.jpeg) at the smallest scale that still meets ``need`` (None:
    full size), as Pillow's draft mode would; any other file, or one libjpeg-turbo reports a problem with, through
    Pillow, which words any refusal."""
    header = jpeg.plain_header(data, limits.max_image_pixels)
    pixels = jpeg.decode_rgb(data, header, need) if header else None
    if pixels is not None:
        return Image.fromarray(pixels)
    with image_errors():
        image = ImageOps.exif_transpose(open_image(data, limits))
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGBA", image.size, WHITE)
            return Image.alpha_composite(background, image).convert("RGB")
        return image.convert("RGB")


def load_mono(data: bytes, rate: int, limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """float32 mono samples at ``rate`` Hz: channels averaged, resampled with a polyphase anti-aliasing filter."""
    with audio_errors(), open_audio(data) as clip:
        check_clip(clip, limits)
        samples = clip.read(dtype="float32", always_2d=True).mean(axis=1)
        source_rate = clip.samplerate
    if not len(samples):
        raise Rejected("empty audio", "the clip has no samples")
    if source_rate != rate:
        from scipy.signal import resample_poly  # imported here: it takes seconds, and queries rarely need it

        common = gcd(rate, source_rate)
        samples = resample_poly(samples, rate // common, source_rate // common)
    return samples.astype(np.float32, copy=False)
