"""Speech into a text space: offline speech recognition (whisper via faster-whisper), then the text encoder.

Audio with no speech in it (music, animal sounds, silence) has nothing this path can embed: it is skipped
with the reason "no speech detected" rather than given the vector of whatever whisper hallucinates. Two
judges must agree that a stretch is speech: a voice activity detector (shipped with faster-whisper), then
whisper itself (its no-speech probability at most whisper's default threshold; the VAD alone let a horse's
whinny through as "Oh"). Long clips are transcribed window by window, as whisper does.

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


@dataclass(frozen=True)
class SpeechSettings:
    """The space's ``audio`` section. ``min_logprob`` and ``max_compression``: whisper's own limits for a window
    it doubts (where it would sample again); a window beyond either is no speech."""

    package: str
    beam_size: int = 1
    language: str = "en"
    pad_seconds: float = 0.0
    min_logprob: float = -1.0
    max_compression: float = 2.4

    def __post_init__(self):
        if self.beam_size < 1 or self.pad_seconds < 0:
            raise ValueError(f"audio beam_size must be 1 or more and pad_seconds 0 or more, not {self.beam_size} "
                             f"and {self.pad_seconds}")
        if not self.max_compression > 0:
            raise ValueError(f"audio max_compression must be above 0, not {self.max_compression}")

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
        from faster_whisper import WhisperModel

        super().__init__(device)
        on_gpu = device.type == "cuda"
        self.whisper = WhisperModel(str(whisper_folder), device="cuda" if on_gpu else "cpu",
                                    device_index=device.index or 0, compute_type="float16" if on_gpu else "int8",
                                    cpu_threads=threads)
        self.text, self.dim = text, text.dim
        self.settings = settings
        self.pad = round(settings.pad_seconds * WHISPER_RATE)

    def preparer(self):
        return _SpeechInput()

    def transcribe(self, samples: np.ndarray) -> str:
        if self.pad:
            samples = np.pad(samples, self.pad)
        segments, _ = self.whisper.transcribe(samples, language=self.settings.language,
                                              beam_size=self.settings.beam_size, temperature=0, vad_filter=True,
                                              condition_on_previous_text=False)
        return " ".join(segment.text.strip() for segment in segments if self.speech(segment)).strip()

    def speech(self, segment: Any) -> bool:
        """Whether whisper both takes a segment for speech and trusts its transcript."""
        return (segment.no_speech_prob <= NO_SPEECH_PROB and segment.avg_logprob >= self.settings.min_logprob
                and segment.compression_ratio <= self.settings.max_compression)

    def encode(self, prepared: list[np.ndarray]) -> Encoded:
        transcripts = [self.transcribe(samples) for samples in prepared]
        spoken = [i for i, text in enumerate(transcripts) if text]
        vectors = np.zeros((len(prepared), self.dim), np.float32)
        if spoken:
            vectors[spoken] = self.text.embed([transcripts[i] for i in spoken])
        return Encoded(vectors, [None if text else NO_SPEECH for text in transcripts],
                       [text or None for text in transcripts])
