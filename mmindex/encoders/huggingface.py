"""Joint models from Hugging Face transformers: CLIP and SigLIP (image + text), CLAP (audio + text).

Weights come from the hub cache or a local folder saved with ``save_pretrained``; preprocessing is the
model's own processor, so vectors match the model's reference use.

A hub id is looked up in the cache first. Only when it is missing there is the hub asked, and only after one
short connection attempt shows that it can be reached: without that, transformers retries for about half a
minute (printing each retry) before it gives up on a machine with no network.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import socket
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers

from mmindex.encoders.base import Encoded, Encoder, inference, normalised, quiet_transformers
from mmindex.encoders.device_decode import DeviceImages, Geometry, JpegBytes
from mmindex.encoders.inputs import load_mono, load_rgb
from mmindex.jpeg import Need
from mmindex.media import decode_utf8

# Which modalities each supported architecture embeds besides text.
MODALITIES = {"clip": ("image", "text"), "siglip": ("image", "text"), "clap": ("audio", "text")}

quiet_transformers()


class ModelUnavailable(RuntimeError):
    """The weights are neither in the hub cache nor in the folder named, and cannot be downloaded."""


HUB_TIMEOUT = 1.0   # seconds for the one connection attempt that tells whether the hub can be reached


@functools.cache
def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be asked for files (HF_HUB_OFFLINE, or no connection to it or to the proxy
    in between), or None. Asked once per process."""
    import huggingface_hub
    from huggingface_hub import constants

    if huggingface_hub.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(endpoint.hostname or ""):
        endpoint = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    host = endpoint.hostname or ""
    try:
        socket.create_connection((host, endpoint.port or (80 if endpoint.scheme == "http" else 443)),
                                 timeout=HUB_TIMEOUT).close()
    except OSError as err:
        return f"{host} cannot be reached ({err.strerror or err})"
    return None


def _from_pretrained(loader: Any, reference: str) -> Any:
    """``loader.from_pretrained(reference)``: from the cache first, so a cached model asks nothing of the network;
    the hub is tried for what the cache lacks, and never where it cannot be reached."""
    folder = Path(reference).is_dir()
    if not folder:
        with contextlib.suppress(OSError):
            return loader.from_pretrained(reference, local_files_only=True)
    offline = None if folder else hub_unreachable()
    try:
        return loader.from_pretrained(reference, local_files_only=folder or offline is not None)
    except OSError as err:
        detail = str(err).splitlines()[0]
        if folder:
            raise ModelUnavailable(f"cannot load a model from the folder {reference}: {detail}") from None
        from huggingface_hub import constants

        raise ModelUnavailable(
            f"cannot load model {reference!r}: it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
            f"{offline or f'could not be downloaded ({detail})'}. On a machine with network, run `hf download "
            f"{reference}` and copy its cache folder (~/.cache/huggingface/hub) to {constants.HF_HUB_CACHE}, or "
            f"save the model with save_pretrained and pass that folder to --model") from None


def load_config(reference: str) -> Any:
    """The model's config (a small file), with an error that says how to get the model if it is missing."""
    config = _from_pretrained(transformers.AutoConfig, reference)
    if config.model_type not in MODALITIES:
        raise ModelUnavailable(f"{reference!r} is a {config.model_type!r} model; mmindex embeds with "
                               f"{', '.join(sorted(MODALITIES))} models (or a space YAML like the presets)")
    return config


def config_dim(config: Any) -> int:
    """The length of a model's shared-space vectors (SigLIP has no projection: its towers' pooled outputs)."""
    return getattr(config, "projection_dim", None) or config.text_config.hidden_size


def load_pretrained(reference: str) -> tuple[Any, Any]:
    """(model, processor) from a hub id or a local folder."""
    load_config(reference)
    model = _from_pretrained(transformers.AutoModel, reference)
    processor = _from_pretrained(transformers.AutoProcessor, reference)
    return model.eval(), processor


@dataclass
class _ImagePreparer:
    """The processor's resize and crop, in a decode process, from a JPEG decoded at the smallest scale that still
    meets ``need`` (the processor's resize). Scaling and normalising wait for the model's device
    (``HuggingFaceEncoder.scaled``): the 8-bit pixels a PIL processor leaves are a quarter of float32's bytes to
    send between processes, and on a GPU that transfer, not the model, bounds the rate."""

    image_processor: Any
    need: Need | None

    def __call__(self, data: bytes) -> np.ndarray:
        return self.image_processor(load_rgb(data, need=self.need), do_rescale=False, do_normalize=False,
                                    return_tensors="np")["pixel_values"][0]


@dataclass
class _AudioPreparer:
    """Clips longer than the model's window are cut into consecutive windows whose vectors are averaged
    (deterministic, unlike the random crop used in training); the last window is repeat-padded."""

    feature_extractor: Any

    def __call__(self, data: bytes) -> dict[str, np.ndarray]:
        rate = self.feature_extractor.sampling_rate
        samples = load_mono(data, rate)
        window = self.feature_extractor.nb_max_samples
        windows = [samples[start:start + window] for start in range(0, len(samples), window)]
        features = self.feature_extractor(windows, sampling_rate=rate, return_tensors="np")
        return {name: features[name] for name in ("input_features", "is_longer") if name in features}


class HuggingFaceEncoder(Encoder):
    """One modality of a loaded transformers model (several encoders share one model)."""

    def __init__(self, model: Any, processor: Any, modality: str, device: torch.device):
        super().__init__(device)
        self.model, self.processor, self.modality = model, processor, modality
        self.dim = config_dim(model.config)
        self.model_type = model.config.model_type
        self.geometry = Geometry.of(processor.image_processor) if modality == "image" else None
        self.device_images: DeviceImages | None = None
        self._staging: torch.Tensor | None = None

    def decode_on_device(self) -> bool:
        if self.geometry is not None:
            self.device_images = DeviceImages(self.geometry, self.device, self._image_preparer())
        return self.device_images is not None

    def _image_preparer(self) -> _ImagePreparer:
        return _ImagePreparer(self.processor.image_processor, self.geometry.need() if self.geometry else None)

    def preparer(self):
        if self.modality == "image":
            return JpegBytes(self._image_preparer()) if self.device_images else self._image_preparer()
        if self.modality == "audio":
            return _AudioPreparer(self.processor.feature_extractor)
        return decode_utf8

    def encode(self, prepared: list[Any]) -> Encoded:
        with inference(self.device):
            if self.modality == "text":
                return Encoded.all_embedded(self._encode_text(prepared))
            if self.modality == "image" and self.device_images is None:
                return Encoded.all_embedded(self._image_vectors(self.pixels(prepared)))
            if self.modality == "image":
                return self._encode_on_device(prepared)
            return Encoded.all_embedded(self._encode_audio(prepared))

    def _image_vectors(self, pixels: torch.Tensor) -> np.ndarray:
        return normalised(self.model.get_image_features(pixel_values=pixels))

    def _encode_on_device(self, prepared: list[np.ndarray]) -> Encoded:
        """Images decoded on the device (device_decode.py); an item none of its decoders can read is skipped."""
        images, skipped = self.device_images(prepared)
        vectors = np.zeros((len(prepared), self.dim), np.float32)
        if images is not None:
            vectors[[i for i, why in enumerate(skipped) if why is None]] = self._image_vectors(self.scaled(images))
        return Encoded(vectors, skipped, [None] * len(prepared))

    def pixels(self, prepared: list[np.ndarray]) -> torch.Tensor:
        """The model's pixel input from prepared 8-bit images. On a GPU they are stacked into pinned memory, whose
        copy to the device does not wait for the host."""
        if self.device.type != "cuda":
            return self.scaled(torch.from_numpy(np.stack(prepared)).to(self.device))
        shape = (len(prepared), *prepared[0].shape)
        if self._staging is None or tuple(self._staging.shape) != shape:
            self._staging = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        np.stack(prepared, out=self._staging.numpy())
        return self.scaled(self._staging.to(self.device, non_blocking=True))

    def scaled(self, pixels: torch.Tensor) -> torch.Tensor:
        """8-bit pixels on the device scaled and normalised as the processor would (the same values within float
        rounding: the processor's own two backends differ as much)."""
        pixels = pixels.float()
        processor = self.processor.image_processor
        if processor.do_rescale:
            pixels = pixels * processor.rescale_factor
        if processor.do_normalize:
            mean, std = (torch.tensor(v, dtype=torch.float32, device=self.device).view(-1, 1, 1)
                         for v in (processor.image_mean, processor.image_std))
            pixels = (pixels - mean) / std
        return pixels

    def _encode_text(self, texts: list[str]) -> np.ndarray:
        # SigLIP was trained on text padded to its full length and must be fed that way.
        padding = "max_length" if self.model_type == "siglip" else True
        tokenizer = self.processor.tokenizer
        limit = tokenizer.model_max_length
        if limit > 100_000:  # the tokenizer does not say: the text tower's positions bound it
            limit = self.model.config.text_config.max_position_embeddings
        tokens = tokenizer(texts, padding=padding, truncation=True, max_length=limit, return_tensors="pt")
        return normalised(self.model.get_text_features(**tokens.to(self.device)))

    def _encode_audio(self, clips: list[dict[str, np.ndarray]]) -> np.ndarray:
        inputs = {name: torch.from_numpy(np.concatenate([clip[name] for clip in clips])).to(self.device)
                  for name in clips[0]}
        windows = normalised(self.model.get_audio_features(**inputs))
        bounds = np.cumsum([0] + [len(clip["input_features"]) for clip in clips])
        means = np.stack([windows[start:end].mean(axis=0) for start, end in itertools.pairwise(bounds)])
        return means / np.linalg.norm(means, axis=1, keepdims=True)


def encoders(reference: str, device: torch.device) -> dict[str, Encoder]:
    model, processor = load_pretrained(reference)
    model.to(device)
    return {modality: HuggingFaceEncoder(model, processor, modality, device)
            for modality in MODALITIES[model.config.model_type]}
