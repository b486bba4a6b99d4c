"""Learning a mapping from paired vectors: the same texts embedded by two spaces' text encoders.

The floor is ridge regression (a linear least-squares map). Following C-MCR (Wang et al., NeurIPS 2023) and
its successor Ex-MCR, the ``contrastive`` method keeps the target space fixed and trains a linear map plus a
residual MLP, starting from the ridge solution, with a symmetric InfoNCE loss (each mapped text must be nearer
its own target than the batch's other targets) and Gaussian noise on the inputs, so that the other modalities
of the source space, which sit a little apart from its texts (the modality gap), land where their texts would.
Inputs are centred on the source texts' mean. benchmarks/make_multilingual_bridge.py compares the methods on
held-out texts.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from mmindex.bridge.mapping import Mapping

METHODS = ("ridge", "contrastive")


@dataclass(frozen=True)
class LearnSettings:
    method: str = "contrastive"
    ridge: float = 0.1          # L2 penalty of the linear least-squares map
    hidden: int = 128           # width of the residual MLP (contrastive only; 0: linear)
    noise: float = 0.02         # std of the Gaussian noise added to each input component (per step)
    temperature: float = 0.05   # of the InfoNCE softmax
    steps: int = 150
    batch: int = 256
    learning_rate: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"bridge method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.ridge <= 0 or self.temperature <= 0 or self.noise < 0 or self.hidden < 0 or self.steps < 0:
            raise ValueError("bridge settings: ridge and temperature must be positive; noise, hidden and steps "
                             "not negative")


def ridge_map(source: np.ndarray, target: np.ndarray, penalty: float) -> Mapping:
    """The closed-form least-squares map of centred source vectors onto target vectors."""
    mean = source.mean(axis=0)
    x = source - mean
    weight = np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ (target - target.mean(axis=0)))
    empty = np.zeros((x.shape[1], 0), np.float32)
    return Mapping(mean.astype(np.float32), weight.astype(np.float32), target.mean(axis=0).astype(np.float32),
                   empty, np.zeros(0, np.float32), np.zeros((0, target.shape[1]), np.float32))


def learn(source: np.ndarray, target: np.ndarray, settings: LearnSettings = LearnSettings()) -> Mapping:
    """A mapping that takes each row of ``source`` near the same row of ``target`` (both unit vectors)."""
    if len(source) != len(target) or len(source) < 2:
        raise ValueError(f"a bridge needs at least 2 paired texts, got {len(source)} and {len(target)}")
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    floor = ridge_map(source, target, settings.ridge)
    if settings.method == "ridge" or settings.steps == 0:
        return floor
    return _contrastive(floor, source, target, settings)


def _contrastive(start: Mapping, source: np.ndarray, target: np.ndarray, settings: LearnSettings) -> Mapping:
    """One torch thread: the matrices are small, and on a busy machine a second thread only waits (measured:
    several times slower with two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(start, source, target, settings)
    finally:
        torch.set_num_threads(threads)


def _train(start: Mapping, source: np.ndarray, target: np.ndarray, settings: LearnSettings) -> Mapping:
    import torch

    generator = torch.Generator().manual_seed(settings.seed)
    x = torch.tensor(source - start.mean, dtype=torch.float32)
    y = torch.nn.functional.normalize(torch.tensor(target, dtype=torch.float32), dim=-1)
    d_in, d_out = start.dims
    weight = torch.tensor(start.weight, requires_grad=True)
    bias = torch.tensor(start.bias, requires_grad=True)
    hidden_in = (torch.randn(d_in, settings.hidden, generator=generator) / d_in ** 0.5).requires_grad_()
    hidden_bias = torch.zeros(settings.hidden, requires_grad=True)
    hidden_out = torch.zeros(settings.hidden, d_out, requires_grad=True)  # starts as the ridge map exactly
    parameters = [weight, bias, hidden_in, hidden_bias, hidden_out]
    optimiser = torch.optim.Adam(parameters, lr=settings.learning_rate)
    for _ in range(settings.steps):
        rows = torch.randperm(len(x), generator=generator)[: settings.batch]
        inputs = x[rows] + settings.noise * torch.randn(len(rows), d_in, generator=generator)
        mapped = inputs @ weight + bias + torch.relu(inputs @ hidden_in + hidden_bias) @ hidden_out
        mapped = torch.nn.functional.normalize(mapped, dim=-1)
        logits = mapped @ y[rows].T / settings.temperature
        labels = torch.arange(len(rows))
        loss = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    arrays = [p.detach().numpy().astype(np.float32) for p in parameters]
    return Mapping(start.mean, *arrays)


def recall_at(mapping: Mapping, source: np.ndarray, target: np.ndarray, ks: tuple[int, ...] = (1, 5)
              ) -> dict[str, float]:
    """How often a mapped source row finds its own target row among all targets (held-out pairs, please)."""
    scores = mapping(source) @ np.asarray(target, np.float32).T
    own = scores[np.arange(len(scores)), np.arange(len(scores))]
    ranks = (scores > own[:, None]).sum(axis=1) + 1
    return {f"recall@{k}": round(float(np.mean(ranks <= k)), 4) for k in ks}


HELD_OUT = "20% of sample keys (by hash), never learned from"


def held_out(key: str, percent: int = 20) -> bool:
    """A stable split by sample key: about ``percent`` % of keys are held out of learning, the same every run."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < percent
