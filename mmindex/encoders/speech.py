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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
class _SpeechInput:
    def __call__(self, data: bytes) -> np.ndarray:
        return load_mono(data, WHISPER_RATE)


class SpeechEncoder(Encoder):
    modality = "audio"

    def __init__(self, text: SentenceEncoder, whisper_folder: Path, device: torch.device, beam_size: int = 1,
                 language: str = "en", pad_seconds: float = 0.0, threads: int = 0):
        from faster_whisper import WhisperModel

        if beam_size < 1 or pad_seconds < 0:
            raise ValueError(f"audio beam_size must be 1 or more and pad_seconds 0 or more, not {beam_size} "
                             f"and {pad_seconds}")
        super().__init__(device)
        on_gpu = device.type == "cuda"
        self.whisper = WhisperModel(str(whisper_folder), device="cuda" if on_gpu else "cpu",
                                    device_index=device.index or 0, compute_type="float16" if on_gpu else "int8",
                                    cpu_threads=threads)
        self.text, self.dim = text, text.dim
        self.beam_size, self.language = beam_size, language
        self.pad = round(pad_seconds * WHISPER_RATE)

    def preparer(self):
        return _SpeechInput()

    def transcribe(self, samples: np.ndarray) -> str:
        if self.pad:
            samples = np.pad(samples, self.pad)
        segments, _ = self.whisper.transcribe(samples, language=self.language, beam_size=self.beam_size,
                                              vad_filter=True, condition_on_previous_text=False)
        return " ".join(segment.text.strip() for segment in segments
                        if segment.no_speech_prob <= NO_SPEECH_PROB).strip()

    def encode(self, prepared: list[np.ndarray]) -> Encoded:
        transcripts = [self.transcribe(samples) for samples in prepared]
        spoken = [i for i, text in enumerate(transcripts) if text]
        vectors = np.zeros((len(prepared), self.dim), np.float32)
        if spoken:
            vectors[spoken] = self.text.embed([transcripts[i] for i in spoken])
        return Encoded(vectors, [None if text else NO_SPEECH for text in transcripts],
                       [text or None for text in transcripts])
