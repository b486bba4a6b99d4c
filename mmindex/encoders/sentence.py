"""Sentence embeddings from a sentence-transformers folder (mean of token states, L2-normalised), loaded
with plain transformers. The offline space's pivot: images and speech are mapped onto it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import transformers

from mmindex.encoders.base import Encoded, Encoder, inference, normalised, quiet_transformers
from mmindex.media import decode_utf8

quiet_transformers()


class SentenceEncoder(Encoder):
    modality = "text"

    def __init__(self, folder: Path, device: torch.device, batch_size: int = 128):
        super().__init__(device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
        self.model = transformers.AutoModel.from_pretrained(str(folder)).eval().to(device)
        self.dim = self.model.config.hidden_size
        settings = folder / "sentence_bert_config.json"
        self.max_tokens = json.loads(settings.read_text())["max_seq_length"] if settings.exists() else 256
        self.batch_size = batch_size

    def preparer(self):
        return decode_utf8

    def encode(self, prepared: list[str]) -> Encoded:
        return Encoded.all_embedded(self.embed(prepared))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors for any number of texts (batched here, so callers may pass thousands)."""
        parts = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                    max_length=self.max_tokens, return_tensors="pt").to(self.device)
            with inference(self.device):
                states = self.model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
                parts.append(normalised((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)))
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float32)
