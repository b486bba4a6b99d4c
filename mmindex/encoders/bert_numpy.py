"""A BERT sentence encoder in NumPy, for queries: the same vectors as sentence.py's torch model, without
importing torch or transformers (which costs seconds), so that `mmindex search "text"` starts fast.

Only for the offline space's text (a sentence-transformers BERT folder with mean pooling); embedding a
corpus uses the torch encoder, which is faster on batches and runs on GPUs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mmindex.media import decode_utf8


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7, well under float32 rounding of the result."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-x * x))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


class NumpySentenceEncoder:
    """Duck-types Encoder (modality, dim, preparer, encode) for text queries."""

    modality = "text"

    def __init__(self, folder: Path):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "bert":
            raise ValueError(f"{folder} is not a BERT model")
        self.weights = load_file(str(folder / "model.safetensors"))
        self.heads, self.layers = config["num_attention_heads"], config["num_hidden_layers"]
        # Dense weights stored (in, out) and contiguous, the query, key and value projections as one matrix: a
        # query of a few tokens is bound by reading the weights, and this layout reads them fastest (~1.6x).
        for i in range(self.layers):
            attention = f"encoder.layer.{i}.attention.self"
            for part in ("weight", "bias"):
                self.weights[f"{attention}.qkv.{part}"] = np.concatenate(
                    [self.weights.pop(f"{attention}.{n}.{part}") for n in ("query", "key", "value")])
        self.dense = {name[: -len(".weight")]: np.ascontiguousarray(self.weights.pop(name).T)
                      for name in [n for n, w in self.weights.items() if w.ndim == 2 and n.startswith("encoder.")]}
        self.eps, self.dim = config["layer_norm_eps"], config["hidden_size"]
        settings = folder / "sentence_bert_config.json"
        max_tokens = json.loads(settings.read_text())["max_seq_length"] if settings.exists() else 256
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.no_padding()

    def preparer(self):
        return decode_utf8

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.dense[name] + self.weights[f"{name}.bias"]

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return _layer_norm(x, self.weights[f"{name}.weight"], self.weights[f"{name}.bias"], self.eps)

    def embed_one(self, text: str) -> np.ndarray:
        ids = np.asarray(self.tokenizer.encode(text).ids)
        w = self.weights
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        size = self.dim // self.heads
        for i in range(self.layers):
            layer = f"encoder.layer.{i}"
            q, k, v = (self._dense(x, f"{layer}.attention.self.qkv").reshape(len(ids), 3, self.heads, size)
                       .transpose(1, 2, 0, 3))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = (scores / scores.sum(-1, keepdims=True)) @ v
            context = context.transpose(1, 0, 2).reshape(len(ids), self.dim)
            x = self._norm(x + self._dense(context, f"{layer}.attention.output.dense"),
                           f"{layer}.attention.output.LayerNorm")
            hidden = _gelu(self._dense(x, f"{layer}.intermediate.dense"))
            x = self._norm(x + self._dense(hidden, f"{layer}.output.dense"), f"{layer}.output.LayerNorm")
        pooled = x.mean(0)
        return (pooled / np.linalg.norm(pooled)).astype(np.float32)

    def encode(self, prepared: list[str]):
        from mmindex.encoders.base import Encoded

        return Encoded.all_embedded(np.stack([self.embed_one(text) for text in prepared]))
