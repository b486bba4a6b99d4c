"""The bad requests tests/test_serve.py sends to a real server: each with the status and the words its error
must have."""

from __future__ import annotations

import base64
import io

from PIL import Image

TOKEN = "test-token-1234"
UPLOAD_LIMIT = 150_000   # under the 4 images of the served samples together (161 kB), over any one query


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


BOMB = base64.b64encode(png(10_000, 10_000)).decode()   # 100 M pixels declared in a few kB
NOT_AN_IMAGE = base64.b64encode(b"this is not an image at all").decode()
JSON = {"Content-Type": "application/json"}
BAD_REQUESTS = [
    # (what, method, path, body, headers, status, words in the error)
    ("junk JSON", "POST", "/search", b"{not json", JSON, 400, "not valid JSON"),
    ("a JSON list", "POST", "/search", b"[1, 2]", JSON, 422, "JSON object"),
    ("k as text", "POST", "/search", {"text": "a cat", "k": "ten"}, JSON, 422, "k must be"),
    ("k zero", "POST", "/search", {"text": "a cat", "k": 0}, JSON, 422, "k must be"),
    ("text a number", "POST", "/search", {"text": 5}, JSON, 422, "text must be a string"),
    ("weights a list", "POST", "/search", {"text": "a cat", "weights": [1]}, JSON, 422, "weights"),
    ("weight not finite", "POST", "/search", b'{"text": "a cat", "weights": {"text": NaN}}', JSON, 422, "finite"),
    ("text too long", "POST", "/search", {"text": "cat " * 20_000}, JSON, 413, "text is over the limit"),
    ("nested too deep", "POST", "/search", b"[" * 100_000, JSON, 400, "not valid JSON"),
    ("unknown modality", "POST", "/search", {"text": "a cat", "modality": "video"}, JSON, 422, "modality"),
    ("unknown field", "POST", "/search", {"txt": "a cat"}, JSON, 422, "unknown field"),
    ("empty query", "POST", "/search", {"text": "  "}, JSON, 422, "empty query"),
    ("image not base64", "POST", "/search", {"image": "%%%"}, JSON, 422, "base64"),
    ("image not an image", "POST", "/search", {"image": NOT_AN_IMAGE}, JSON, 422, "unreadable image"),
    ("decompression bomb", "POST", "/search", {"image": BOMB}, JSON, 413, "pixels"),
    ("oversized upload", "POST", "/search", {"text": "x" * (UPLOAD_LIMIT + 10)}, JSON, 413, "over the limit"),
    ("form body", "POST", "/search", b"text=cat", {"Content-Type": "application/x-www-form-urlencoded"}, 415,
     "multipart"),
    ("unknown dataset", "POST", "/search", {"text": "a cat", "dataset": "nope"}, JSON, 404, "no dataset"),
    ("unknown space", "POST", "/search", {"text": "a cat", "space": "clip"}, JSON, 404, "no indexed space"),
    ("'..' in a media URL", "GET", "/media/demo/../../etc/passwd/image", None, {}, 400, "never a file path"),
    ("encoded '..'", "GET", "/media/demo/%2e%2e/%2e%2e/etc/image", None, {}, 400, "never a file path"),
    ("absolute path", "GET", "/media/demo//etc/passwd/image", None, {}, 400, "never a file path"),
    ("unknown key", "GET", "/media/demo/0123456789abcdef0123/image", None, {}, 404, "no sample"),
    ("unknown member", "GET", "/media/demo/{cat}/thumbnail", None, {}, 404, "no member"),
    ("member the sample lacks", "GET", "/media/demo/{cat}/audio", None, {}, 404, "has no audio"),
    ("media of unknown dataset", "GET", "/media/nope/{cat}/image", None, {}, 404, "no dataset"),
    ("thumbnail too large", "GET", "/thumbnail/demo/{cat}?size=100000", None, {}, 422, "size"),
    ("thumbnail of a clip", "GET", "/thumbnail/demo/{clip}", None, {}, 404, "has no image"),
    ("clip image_url", "POST", "/knn-service", {"image_url": "http://example.com/a.jpg", "modality": "image",
                                                "num_images": 2, "indice_name": "demo"}, JSON, 422, "image_url"),
    ("clip vector of another size", "POST", "/knn-service", {"embedding_input": [0.1, 0.2], "modality": "image",
                                                             "num_images": 2}, JSON, 422, "384 numbers"),
    ("clip unknown index", "POST", "/knn-service", {"text": "a", "indice_name": "laion5B"}, JSON, 404, "no index"),
    ("no token", "GET", "/info", None, {"Authorization": ""}, 401, "token is required"),
    ("a wrong token", "GET", "/info", None, {"Authorization": "Bearer wrong-token-99"}, 401, "token is required"),
    ("a malformed cookie", "GET", "/info", None, {"Authorization": "", "Cookie": "a=b; $$$=1"}, 401, "token is"),
]

MULTIPART_MISTAKES = [   # (parts: a form field is a part without a file name, status, words in the error)
    ({"document": ("a.pdf", b"%PDF-1.4", "application/pdf")}, 422, "only image and audio"),
    ({"text": (None, "a cat"), "k": (None, "many")}, 422, "whole number"),
    ({"text": (None, "a cat"), "weights": (None, "{not json")}, 422, "weights must be JSON"),
    ({"image": ("a.png", b"\x89PNG broken", "image/png")}, 422, "the image"),
    ({"image": ("bomb.png", base64.b64decode(BOMB), "image/png")}, 413, "pixels"),
    ({"audio": ("a.wav", b"RIFF....WAVE", "audio/wav")}, 422, "unreadable audio"),
]
