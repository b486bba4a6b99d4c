"""Images decoded, resized and cropped on the model's device, so that decode processes only read JPEG files' bytes.

A batch's JPEGs are decoded in one call to nvJPEG (torchvision's batched ``decode_jpeg``) where torchvision imports
and the device is a GPU; elsewhere (a CPU device, CI) by libjpeg-turbo in the worker, so the same code runs
everywhere. torchvision is never a dependency: it is imported here only, and a failed import means the host
decodes. The decoded images are then resized and centre-cropped as the space's processor does: PIL's bicubic or
bilinear filter with antialiasing, which torch's ``interpolate`` reproduces, rounded to 8 bits as PIL leaves them.

Images fall back one by one to the CPU preparer: in the decode process, any file that is not a plain JPEG (see
mmindex.jpeg), is turned by its EXIF orientation or lacks its end marker; in the worker, a JPEG the device
decoder refuses. The CPU preparer then decodes it, or says why not, as it would have anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmindex import jpeg
from mmindex.encoders.base import Preparer
from mmindex.encoders.inputs import DEFAULT_LIMITS
from mmindex.jpeg import Need
from mmindex.media import Rejected

DECODES = ("auto", "cpu", "device")
_FILTERS = {2: "bilinear", 3: "bicubic"}  # PIL's resample codes that torch reproduces with antialias=True


@functools.cache
def nvjpeg() -> Callable[..., list[torch.Tensor]] | None:
    """torchvision's batched JPEG decoder (RGB output), or None where torchvision does not import (0.28 fails to
    import on a CPU-only machine)."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # whatever the import raises, the host decodes
        return None
    return functools.partial(decode_jpeg, mode=ImageReadMode.RGB)


def on_device(decode: str, device: str) -> bool:
    """Whether images are decoded on the model's device: ``device`` always (on a CPU device or without torchvision,
    by libjpeg-turbo in the worker); ``auto`` on a GPU where nvJPEG is there; ``cpu`` never."""
    return decode == "device" or (decode == "auto" and device.startswith("cuda") and nvjpeg() is not None)


@dataclass(frozen=True)
class Geometry:
    """A processor's resize (its short side to ``shortest_edge`` with transformers' rounding, else to ``size``),
    filter and centre crop: (height, width) pairs."""

    shortest_edge: int | None
    size: tuple[int, int] | None
    mode: str
    crop: tuple[int, int] | None

    @classmethod
    def of(cls, processor: Any) -> Geometry | None:
        """The geometry of a Hugging Face image processor; None for one that does what this module does not
        reproduce (other filters, a longest edge, padding, a crop larger than the resized image)."""
        size = processor.size
        mode = _FILTERS.get(int(processor.resample))
        exotic = [size.get(k) for k in ("longest_edge", "max_height", "max_width", "min_pixels", "max_pixels")]
        if not processor.do_resize or mode is None or any(exotic) or getattr(processor, "do_pad", None):
            return None
        short = size.get("shortest_edge")
        fixed = (size.get("height"), size.get("width")) if size.get("height") and size.get("width") else None
        if not (short or fixed):
            return None
        crop = None
        if processor.do_center_crop:
            crop = (processor.crop_size.get("height") or 0, processor.crop_size.get("width") or 0)
            bound = (short, short) if short else fixed
            if min(crop) < 1 or crop[0] > bound[0] or crop[1] > bound[1]:
                return None
        return cls(short, None if short else fixed, mode, crop)

    def need(self) -> Need:
        """The smallest decoded size the resize can start from (for DCT-scaled decoding on the CPU)."""
        return Need(short=self.shortest_edge or max(self.size or (0,)))

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' ``get_resize_output_image_size`` (default_to_square=False) for a shortest edge."""
        if self.size:
            return self.size
        short, long = sorted((height, width))
        edge = self.shortest_edge
        return (int(edge * long / short), edge) if width <= height else (edge, int(edge * long / short))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """3 x H x W uint8 -> the processor's 8-bit pixels, on the image's device."""
        height, width = self.resized_size(*image.shape[1:])
        resized = torch.nn.functional.interpolate(image[None].float(), (height, width), mode=self.mode,
                                                  antialias=True, align_corners=False)[0]
        resized = resized.round_().clamp_(0, 255).to(torch.uint8)
        if self.crop is None:
            return resized
        top, left = (height - self.crop[0]) // 2, (width - self.crop[1]) // 2
        return resized[:, top:top + self.crop[0], left:left + self.crop[1]]


@dataclass
class JpegBytes:
    """In a decode process: a plain JPEG file's bytes (1-D uint8) for the device to decode; for any other file,
    the CPU preparer's pixels (3-D)."""

    on_cpu: Preparer

    def __call__(self, data: bytes) -> np.ndarray:
        header = jpeg.plain_header(data, DEFAULT_LIMITS.max_image_pixels)
        if header is None or header.orientation != 1 or not jpeg.ends_whole(data):
            return self.on_cpu(data)
        return np.frombuffer(data, np.uint8).copy()


class DeviceImages:
    """A batch from JpegBytes as the processor's 8-bit pixels on the device, and why any item has none."""

    def __init__(self, geometry: Geometry, device: torch.device, on_cpu: Preparer):
        self.geometry, self.device, self.on_cpu = geometry, device, on_cpu
        self.nvjpeg = nvjpeg() if device.type == "cuda" else None

    def __call__(self, prepared: list[np.ndarray]) -> tuple[torch.Tensor | None, list[str | None]]:
        """(N x 3 x h x w uint8 on the device for the items that have pixels, in order; per item, None or why not)."""
        jpegs = [i for i, item in enumerate(prepared) if item.ndim == 1]
        decoded = dict(zip(jpegs, self._decode([prepared[i] for i in jpegs]), strict=True))
        rows, skipped = [], []
        for i, item in enumerate(prepared):
            if decoded.get(i) is not None:
                rows.append(self.geometry(decoded[i]))
                skipped.append(None)
                continue
            try:  # pixels a CPU preparer made, or a JPEG the device refused, which the CPU preparer decodes
                pixels = self.on_cpu(item.tobytes()) if item.ndim == 1 else item
            except Rejected as rejected:
                skipped.append(f"{rejected.reason}: {rejected.detail}")
                continue
            rows.append(torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device))
            skipped.append(None)
        return (torch.stack(rows) if rows else None), skipped

    def _decode(self, jpegs: list[np.ndarray]) -> list[torch.Tensor | None]:
        """Each JPEG as 3 x H x W uint8 on the device, None where the decoder refuses it: one batched nvJPEG call
        (image by image if the batch fails), or libjpeg-turbo on the host."""
        if self.nvjpeg is None:
            return [self._on_host(data) for data in jpegs]
        tensors = [torch.from_numpy(data) for data in jpegs]
        try:
            return list(self.nvjpeg(tensors, device=self.device))
        except RuntimeError:
            return [_refused_as_none(self.nvjpeg, data, self.device) for data in tensors]

    def _on_host(self, data: np.ndarray) -> torch.Tensor | None:
        raw = data.tobytes()
        header = jpeg.plain_header(raw, DEFAULT_LIMITS.max_image_pixels)
        pixels = jpeg.decode_rgb(raw, header, None) if header else None
        return None if pixels is None else torch.from_numpy(pixels).permute(2, 0, 1).to(self.device)


def _refused_as_none(decode: Callable[..., list[torch.Tensor]], data: torch.Tensor,
                     device: torch.device) -> torch.Tensor | None:
    try:
        return decode([data], device=device)[0]
    except RuntimeError:
        return None
