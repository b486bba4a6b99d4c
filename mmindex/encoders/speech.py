"""Speech into a text space: offline speech recognition (whisper via faster-whisper), then the text encoder.

Audio with no speech in it (music, animal sounds, silence) has nothing this path can embed: it is skipped
with the reason "no speech detected" rather than given the vector of whatever whisper hallucinates. Two
judges must agree that a stretch is speech: a voice activity detector (shipped with faster-whisper), then
whisper itself (its no-speech probability at most whisper's default threshold; the VAD alone let a horse's
whinny through as "Oh").

Clips are transcribed together. The detector's stretches of speech in each clip are joined (the silence between
them dropped) into windows of at most 30 s (``window_seconds``), whisper's own window, and the windows of all the
clips of a batch are decoded together: on a GPU one forward for many windows instead of one each. Each window is
decoded whole, without timestamps: with them, whisper leaves the words after its last timestamp for a next pass
that a batch does not make, and 4 of 358 recorded prompts lost words that way.

``pad_seconds`` of silence on each side and a wider beam (``beam_size``) are for clips trimmed tight around
one to three words, which whisper may cut short or drop. On public clips (benchmarks/offline_quality.py)
0.5 s of padding won back words on tight clips and cost little on ones with silence already around the
words, so the offline preset pads; beam 5 helped on none of them, so the preset decodes greedily.

Decoding is deterministic: one temperature, 0. Whisper's default re-decodes a window whose text it doubts
(mean log-probability under -1, or gzip compression ratio over 2.4) by sampling at rising temperatures, so the
same clip gave "hen", "Ten" or "Then" from run to run. Here such a window is taken as no speech instead (a third
judge). On public clips (benchmarks/RESULTS.md) it held back a slowed cat's "Ha ha!", and cost 7 of 351 recorded
prompts, all single words, 4 of them transcribed wrong. Transcripts did not change with CTranslate2's threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mmindex.encoders.base import Encoded, Encoder
from mmindex.encoders.inputs import load_mono

if TYPE_CHECKING:
    from mmindex.encoders.sentence import SentenceEncoder

WHISPER_RATE = 16_000
NO_SPEECH = "no speech detected"
NO_SPEECH_PROB = 0.6   # whisper's own default: above it, whisper judges a window not to be speech
WINDOW_SECONDS = 30    # whisper's window: it reads no more at once
WINDOWS_AT_ONCE = 32   # windows decoded in one batch (30 s of audio and 1 MB of features each, at most)


@dataclass(frozen=True)
class SpeechSettings:
    """The space's ``audio`` section. ``min_logprob`` and ``max_compression``: whisper's own limits for a window
    it doubts (where it would sample again); a window beyond either is no speech. ``window_seconds``: the most
    speech decoded as one window (whisper's own window at most)."""

    package: str
    beam_size: int = 1
    language: str = "en"
    pad_seconds: float = 0.0
    min_logprob: float = -1.0
    max_compression: float = 2.4
    window_seconds: float = WINDOW_SECONDS

    def __post_init__(self):
        if self.beam_size < 1 or self.pad_seconds < 0:
            raise ValueError(f"audio beam_size must be 1 or more and pad_seconds 0 or more, not {self.beam_size} "
                             f"and {self.pad_seconds}")
        if not self.max_compression > 0:
            raise ValueError(f"audio max_compression must be above 0, not {self.max_compression}")
        if not 1 <= self.window_seconds <= WINDOW_SECONDS:
            raise ValueError(f"audio window_seconds must be from 1 to whisper's window, {WINDOW_SECONDS}, not "
                             f"{self.window_seconds}")

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> SpeechSettings:
        if unknown := sorted(set(section) - set(cls.__dataclass_fields__)):
            raise ValueError(f"unknown audio settings {unknown} (known: {sorted(cls.__dataclass_fields__)})")
        return cls(**section)


@dataclass(frozen=True)
class _SpeechInput:
    def __call__(self, data: bytes) -> np.ndarray:
        return load_mono(data, WHISPER_RATE)


class SpeechEncoder(Encoder):
    modality = "audio"

    def __init__(self, text: SentenceEncoder, whisper_folder: Path, device: torch.device, settings: SpeechSettings,
                 threads: int = 0):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        super().__init__(device)
        on_gpu = device.type == "cuda"
        self.whisper = WhisperModel(str(whisper_folder), device="cuda" if on_gpu else "cpu",
                                    device_index=device.index or 0, compute_type="float16" if on_gpu else "int8",
                                    cpu_threads=threads)
        self.batched = BatchedInferencePipeline(self.whisper)
        self.text, self.dim = text, text.dim
        self.settings = settings
        self.pad = round(settings.pad_seconds * WHISPER_RATE)

    def preparer(self):
        return _SpeechInput()

    def windows(self, samples: np.ndarray) -> list[np.ndarray]:
        """A clip's speech as the voice activity detector finds it, joined into windows of at most
        ``window_seconds`` (a stretch longer than that is split at a pause, or where it must)."""
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        if self.pad:
            samples = np.pad(samples, self.pad)
        longest = self.settings.window_seconds
        stretches = get_speech_timestamps(samples, VadOptions(max_speech_duration_s=longest), WHISPER_RATE)
        return collect_chunks(samples, stretches, WHISPER_RATE, longest)[0] if stretches else []

    def transcripts(self, clips: list[np.ndarray]) -> list[str]:
        """Each clip's transcript ("" for no speech): the windows of all the clips, decoded WINDOWS_AT_ONCE at a
        time (a bound on the audio and features held at once, whatever the clips' lengths)."""
        owners, windows = [], []
        for owner, samples in enumerate(clips):
            for window in self.windows(samples):
                owners.append(owner)
                windows.append(window)
        texts: list[list[str]] = [[] for _ in clips]
        for start in range(0, len(windows), WINDOWS_AT_ONCE):
            decoded = self._decoded(windows[start:start + WINDOWS_AT_ONCE])
            for owner, text in zip(owners[start:start + WINDOWS_AT_ONCE], decoded, strict=True):
                if text:
                    texts[owner].append(text)
        return [" ".join(text) for text in texts]

    def _decoded(self, windows: list[np.ndarray]) -> list[str]:
        """Each window's text ("" where whisper hears no speech, or doubts what it heard), all in one batch. The
        windows are laid end to end, each from a whole second, and each segment whisper returns names its window
        by its ``seek``: the window's start in whisper's frames (exact, from a whole second)."""
        starts = [0]
        for window in windows[:-1]:
            starts.append(starts[-1] + ceil(len(window) / WHISPER_RATE))
        audio = np.zeros(starts[-1] * WHISPER_RATE + len(windows[-1]), np.float32)
        for start, window in zip(starts, windows, strict=True):
            audio[start * WHISPER_RATE:start * WHISPER_RATE + len(window)] = window
        bounds = [{"start": start, "end": start + len(window) / WHISPER_RATE}
                  for start, window in zip(starts, windows, strict=True)]
        segments, _ = self.batched.transcribe(audio, language=self.settings.language, clip_timestamps=bounds,
                                              batch_size=len(windows), beam_size=self.settings.beam_size,
                                              temperature=0, without_timestamps=True)
        window_at = {start * self.whisper.frames_per_second: i for i, start in enumerate(starts)}
        texts: list[list[str]] = [[] for _ in windows]
        for segment in segments:
            if self.speech(segment) and segment.text.strip():
                texts[window_at[segment.seek]].append(segment.text.strip())
        return [" ".join(text) for text in texts]

    def speech(self, segment: Any) -> bool:
        """Whether whisper both takes a segment for speech and trusts its transcript."""
        return (segment.no_speech_prob <= NO_SPEECH_PROB and segment.avg_logprob >= self.settings.min_logprob
                and segment.compression_ratio <= self.settings.max_compression)

    def encode(self, prepared: list[np.ndarray]) -> Encoded:
        transcripts = self.transcripts(prepared)
        spoken = [i for i, text in enumerate(transcripts) if text]
        vectors = np.zeros((len(prepared), self.dim), np.float32)
        if spoken:
            vectors[spoken] = self.text.embed([transcripts[i] for i in spoken])
        return Encoded(vectors, [None if text else NO_SPEECH for text in transcripts],
                       [text or None for text in transcripts])
