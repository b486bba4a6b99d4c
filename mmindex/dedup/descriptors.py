"""Descriptors that tell copies from look-alikes: the vectors near-duplicate search compares, per modality.

A search space's vectors say what a sample shows (ConSE's label vectors put two different cats together), so
copies are judged on the signal itself instead:

    image  the blurred grayscale picture at 16 x 16, mean removed: the whole image, and nine windows of 90% of
           it. A copy cropped by up to 10% matches one window of the original (or the original one of its own);
           colour, codec, scale and a small overlay barely move a blurred thumbnail, while another crop of the
           same photo is another picture at this resolution. Similarity: the best of the whole view of one
           against every view of the other, both ways.
    audio  log-mel band statistics over the clip's sounding frames (mean level per band with the overall level
           removed, spread per band, and change per band): gain, codec and a trimmed edge leave them in place.
    text   hashed character 5-grams of the text normalised (Unicode NFKC, case, punctuation, spacing).

Every descriptor view is a unit vector (zero where there is nothing to compare: a blank image), so similarities
are cosines. ``size`` is what the keep rule prefers: pixels, seconds, characters.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from mmindex.encoders.inputs import load_mono, load_rgb
from mmindex.media import decode_utf8

IMAGE_SIDE, IMAGE_WORK, IMAGE_BLUR, WINDOW, WINDOW_STEPS = 16, 128, 1.5, 0.9, 3
AUDIO_RATE, AUDIO_FFT, AUDIO_HOP, AUDIO_BANDS, AUDIO_RANGE_DB = 16_000, 512, 160, 40, 40.0
TEXT_DIM, TEXT_GRAM = 1024, 5
VERSION = 1   # of the descriptors: a change makes a dedup run describe every shard again


@dataclass(frozen=True)
class Descriptor:
    views: np.ndarray   # float32 (views, dim), each a unit vector or zero
    size: float         # the keep rule's measure: pixels, seconds or characters


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-6 else np.zeros_like(vector)


def _thumbnail(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image.resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BOX), np.float32).ravel()
    return _unit(pixels - pixels.mean())


def describe_image(data: bytes) -> Descriptor:
    image = load_rgb(data)
    work = image.convert("L").resize((IMAGE_WORK, IMAGE_WORK), Image.Resampling.BOX)
    work = work.filter(ImageFilter.GaussianBlur(IMAGE_BLUR))
    offsets = np.linspace(0, 1 - WINDOW, WINDOW_STEPS)
    windows = [tuple(round(v * IMAGE_WORK) for v in (x, y, x + WINDOW, y + WINDOW)) for x in offsets for y in offsets]
    views = [_thumbnail(work)] + [_thumbnail(work.crop(box)) for box in windows]
    return Descriptor(np.stack(views), float(image.width * image.height))


def _mel_filters() -> np.ndarray:
    """Triangular mel filters (bands, FFT bins) from 60 Hz to 7.6 kHz."""
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595 * np.log10(1 + hz / 700)

    edges = 700 * (10 ** (np.linspace(mel(np.array(60.0)), mel(np.array(7600.0)), AUDIO_BANDS + 2) / 2595) - 1)
    bins = np.fft.rfftfreq(AUDIO_FFT, 1 / AUDIO_RATE)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((bins - low) / (centre - low), (high - bins) / (high - centre)))


MEL = _mel_filters()


def describe_audio(data: bytes) -> Descriptor:
    samples = load_mono(data, AUDIO_RATE)
    duration = len(samples) / AUDIO_RATE
    samples = np.pad(samples, (0, max(0, AUDIO_FFT - len(samples))))
    frames = np.lib.stride_tricks.sliding_window_view(samples, AUDIO_FFT)[::AUDIO_HOP] * np.hanning(AUDIO_FFT)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    levels = 10 * np.log10(power @ MEL.T + 1e-10)           # (frames, bands) in dB
    levels = np.maximum(levels, levels.max() - AUDIO_RANGE_DB)   # below the range: silence, whatever its level
    loudness = levels.max(axis=1)
    sounding = levels[loudness > loudness.min()] if loudness.max() > loudness.min() else levels
    change = np.abs(np.diff(sounding, axis=0)).mean(axis=0) if len(sounding) > 1 else np.zeros(AUDIO_BANDS)
    parts = [_unit(part - part.mean()) for part in (sounding.mean(axis=0), sounding.std(axis=0), change)]
    return Descriptor(_unit(np.concatenate(parts).astype(np.float32))[None, :], duration)


def normalise_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


def describe_text(data: bytes) -> Descriptor:
    text = decode_utf8(data)
    normal = f" {normalise_text(text)} "
    vector = np.zeros(TEXT_DIM, np.float32)
    for start in range(max(1, len(normal) - TEXT_GRAM + 1)):
        digest = zlib.crc32(normal[start:start + TEXT_GRAM].encode())
        vector[digest % TEXT_DIM] += 1.0 if digest & 0x8000_0000 else -1.0
    return Descriptor(_unit(vector)[None, :], float(len(text)))


DESCRIBE = {"image": describe_image, "audio": describe_audio, "text": describe_text}
