"""The encoder contract shared by the worker pool and the Beam pipeline."""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where a model runs, so that a search that needs none starts fast
    import torch

# A preparer turns one item's raw bytes into model input on the CPU; it raises media.Rejected for bad media.
Preparer = Callable[[bytes], Any]


@dataclass
class Encoded:
    """A batch's result: one row per item (zeros where skipped), the reason an item was skipped, and notes
    (what the encoder understood of it, such as a transcript)."""

    vectors: np.ndarray
    skipped: list[str | None]
    notes: list[str | None]

    @classmethod
    def all_embedded(cls, vectors: np.ndarray) -> Encoded:
        return cls(vectors, [None] * len(vectors), [None] * len(vectors))


class Encoder(ABC):
    """Maps one modality into a space: ``dim``-sized, L2-normalised float vectors."""

    modality: str
    dim: int

    def __init__(self, device: torch.device):
        self.device = device

    @abstractmethod
    def preparer(self) -> Preparer:
        """A picklable function for decode processes: raw bytes -> model input."""

    @abstractmethod
    def encode(self, prepared: list[Any]) -> Encoded:
        """Model inputs (from this encoder's preparer) -> vectors, in order."""

    def decode_on_device(self) -> bool:
        """Switches to decoding media on the encoder's device, where it can (before ``preparer`` is called; see
        mmindex.encoders.device_decode); returns whether it did."""
        return False


def quiet_transformers() -> None:
    """No download chatter or progress bars from loading models with transformers."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@contextlib.contextmanager
def inference(device: torch.device) -> Iterator[None]:
    """No autograd; mixed precision (fp16 autocast) on CUDA, full precision on CPU."""
    import torch

    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        else:
            yield


def normalised(features: Any) -> np.ndarray:
    """float32 unit vectors from a features tensor (or a transformers output holding them)."""
    import torch

    if not isinstance(features, torch.Tensor):
        features = features.pooler_output  # transformers 5 wraps projected features in a model output
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy()


_PINNED = threading.Lock()


@contextlib.contextmanager
def pinned_threads(device: torch.device, count: int | None) -> Iterator[None]:
    """Torch's intra-op threads set to ``count`` on the CPU, for a model whose results change with them (None: as
    they are). One pinned computation at a time, so that each puts back the count it found."""
    import torch

    if count is None or device.type != "cpu":
        yield
        return
    with _PINNED:
        found = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(found)
