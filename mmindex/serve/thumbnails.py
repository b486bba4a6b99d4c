"""Thumbnails of image members, made on the server (JPEG, the longer side ``size``) and kept in a bounded cache."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable

from PIL import Image

from mmindex.encoders.inputs import load_rgb
from mmindex.media import Limits

CACHE_BYTES = 64 * 2**20


class Thumbnails:
    """An LRU cache of thumbnails by (dataset, key, size), bounded by the bytes it holds."""

    def __init__(self, max_image_pixels: int, capacity: int = CACHE_BYTES):
        self.limits = Limits(max_image_pixels=max_image_pixels)
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, name: tuple[str, str, int], image: Callable[[], bytes]) -> bytes:
        """The cached thumbnail, or one made from ``image()`` (read only on a miss)."""
        with self._lock:
            if name in self._cache:
                self._cache.move_to_end(name)
                return self._cache[name]
        made = make_thumbnail(image(), name[2], self.limits)
        with self._lock:
            if name not in self._cache:
                self._cache[name] = made
                self._held += len(made)
            while self._held > self.capacity and len(self._cache) > 1:
                self._held -= len(self._cache.popitem(last=False)[1])
        return made


def make_thumbnail(image: bytes, size: int, limits: Limits) -> bytes:
    """JPEG bytes of the image as displayed (EXIF orientation, transparency on white), fitting size x size."""
    picture = load_rgb(image, limits)
    picture.thumbnail((size, size), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=85, optimize=True)
    return out.getvalue()
