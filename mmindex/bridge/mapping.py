"""A learned mapping from one space's vectors into another's: centre, linear map plus a small residual MLP,
normalise. Applied with NumPy only, so a query through a bridge needs no torch.

Stored as an .npz of plain float arrays (never pickles); its digest names it in the space's fingerprint.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass, fields

import numpy as np

from mmindex import storage


class BadMapping(ValueError):
    """A mapping file that is not one this module wrote (wrong arrays, shapes or types)."""


@dataclass(frozen=True)
class Mapping:
    """y = normalise(W·(x - mean) + b + U·relu(V·(x - mean) + c)); the MLP part may have zero width."""

    mean: np.ndarray        # (d_in,)  the source texts' mean, removed first (centring)
    weight: np.ndarray      # (d_in, d_out)
    bias: np.ndarray        # (d_out,)
    hidden_in: np.ndarray   # (d_in, h)
    hidden_bias: np.ndarray  # (h,)
    hidden_out: np.ndarray  # (h, d_out)

    def __post_init__(self) -> None:
        d_in, d_out = self.weight.shape if self.weight.ndim == 2 else (-1, -1)
        width = self.hidden_in.shape[1] if self.hidden_in.ndim == 2 else -1
        expected = {"mean": (d_in,), "weight": (d_in, d_out), "bias": (d_out,), "hidden_in": (d_in, width),
                    "hidden_bias": (width,), "hidden_out": (width, d_out)}
        for name, shape in expected.items():
            array = getattr(self, name)
            if array.shape != shape or array.dtype.kind != "f" or not np.isfinite(array).all():
                raise BadMapping(f"mapping array {name!r} is {array.dtype} {array.shape}, expected finite floats "
                                 f"{shape}")

    @property
    def dims(self) -> tuple[int, int]:
        return self.weight.shape[0], self.weight.shape[1]

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        """Unit vectors in the target space, one per row of ``vectors``."""
        def f32(array: np.ndarray) -> np.ndarray:
            return array.astype(np.float32, copy=False)  # a loaded mapping is float32 already: no copy per query

        x = np.asarray(vectors, np.float32) - f32(self.mean)
        y = x @ f32(self.weight) + f32(self.bias)
        if self.hidden_in.shape[1]:
            hidden = np.maximum(x @ f32(self.hidden_in) + f32(self.hidden_bias), 0)
            y = y + hidden @ f32(self.hidden_out)
        return y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)

    def to_bytes(self, dtype: type = np.float32) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **{f.name: getattr(self, f.name).astype(dtype) for f in fields(self)})
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "mapping") -> Mapping:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                return cls(**{f.name: arrays[f.name].astype(np.float32) for f in fields(cls)})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise BadMapping(f"{origin} is not a bridge mapping ({err})") from None


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def save(mapping: Mapping, path: str) -> str:
    """Writes atomically; returns the file's digest."""
    data = mapping.to_bytes()
    storage.write_atomic(path, data)
    return digest(data)


def load(path: str) -> tuple[Mapping, str]:
    """The mapping and its file's digest."""
    data = storage.read_bytes(path)
    return Mapping.from_bytes(data, path), digest(data)
