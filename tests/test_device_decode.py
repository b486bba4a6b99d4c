"""Images decoded on the model's device (mmindex.encoders.device_decode), run here through its CPU fallback: no
torchvision, so libjpeg-turbo decodes in the worker and torch resizes on the CPU device. The processor's pixels
within a level, vectors within tolerance of Pillow's full decode (and so are the CPU path's, DCT-scaled), and
every file the device cannot decode falls back image by image to the CPU path's outcome."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from test_jpeg import LIMITS, PHOTO, encoded, photo, with_exif
from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil

from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.encoders.device_decode import Geometry, nvjpeg, on_device
from mmindex.encoders.inputs import load_rgb
from mmindex.jpeg import decode_rgb, plain_header
from mmindex.media import Rejected
from mmindex.spaces import resolve_space

SIZES = [(256, 192), (451, 300), (300, 451), (1024, 768), (2048, 1536)]


@pytest.fixture(scope="module")
def clip_224(tmp_path_factory):
    """A tiny CLIP that takes 224 px images (as real ones do), so that DCT scaling happens as it would."""
    from tiny_models import save_tiny_clip

    return save_tiny_clip(tmp_path_factory.mktemp("models") / "tiny-clip-224", image_size=224)


def encoder(folder, device_decode: bool):
    image = resolve_space(str(folder)).load("cpu")["image"]
    assert image.decode_on_device() if device_decode else True
    return image


def prepared(image_encoder, files: list[bytes]) -> list:
    out = []
    for data in files:
        try:
            out.append(image_encoder.preparer()(data))
        except Rejected as rejected:
            out.append(rejected)
    return out


def outcomes(image_encoder, files: list[bytes]) -> list:
    """Per file, its vector or the reason it has none, as embed's collect() sees them."""
    items = prepared(image_encoder, files)
    good = [i for i, x in enumerate(items) if not isinstance(x, Rejected)]
    encoded_ = image_encoder.encode([items[i] for i in good])
    out: list = [f"{x.reason}: {x.detail}" if isinstance(x, Rejected) else None for x in items]
    for j, i in enumerate(good):
        out[i] = encoded_.skipped[j] or encoded_.vectors[j]
    return out


@pytest.mark.parametrize("processor", [CLIPImageProcessorPil(), SiglipImageProcessorPil()], ids=["clip", "siglip"])
def test_the_device_resize_and_crop_are_the_processors_within_a_level(processor):
    geometry = Geometry.of(processor)
    for size in [*SIZES, (64, 64), (1000, 37)]:
        image = Image.fromarray(PHOTO).resize(size, Image.Resampling.BILINEAR)
        expected = processor(image, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        got = geometry(torch.from_numpy(np.array(image)).permute(2, 0, 1)).numpy()
        assert got.shape == expected.shape
        difference = np.abs(got.astype(int) - expected.astype(int))
        # PIL rounds to 8 bits between its two passes, torch does not: a few levels apart at worst (an overshoot
        # clipped where an image is enlarged), as the processor's own torchvision backend is
        assert difference.mean() < 0.25 and difference.max() <= 8, size


def test_processors_it_cannot_reproduce_stay_on_the_cpu():
    assert Geometry.of(CLIPImageProcessorPil(resample=Image.Resampling.LANCZOS)) is None
    assert Geometry.of(CLIPImageProcessorPil(crop_size={"height": 300, "width": 300})) is None


def test_decoding_is_chosen_by_the_setting_and_the_device():
    assert not on_device("cpu", "cuda:0")
    assert on_device("device", "cpu")
    assert not on_device("auto", "cpu")
    assert on_device("auto", "cuda:0") == (nvjpeg() is not None)


def cosines(a: list, b: list) -> np.ndarray:
    return np.array([float(np.dot(x, y)) for x, y in zip(a, b, strict=True)])


def test_vectors_stay_within_tolerance_of_pillows_full_decode(clip_224):
    """JPEGs of 256-2048 px: the CPU path (DCT-scaled) and the device path (full size, resized by torch) against
    the processor on Pillow's full decode, as embedding worked before."""
    files = [photo(*size) for size in SIZES]
    processor = transformers.AutoProcessor.from_pretrained(clip_224).image_processor
    cpu, device = encoder(clip_224, False), encoder(clip_224, True)
    pillow = [processor(Image.open(io.BytesIO(data)).convert("RGB"), do_rescale=False, do_normalize=False,
                        return_tensors="np")["pixel_values"][0] for data in files]
    reference = list(cpu.encode(pillow).vectors)
    assert all(item.ndim == 1 for item in prepared(device, files)), "decode processes only read the bytes"
    assert cosines(list(cpu.encode(prepared(cpu, files)).vectors), reference).min() > 0.99
    assert cosines(outcomes(device, files), reference).min() > 0.99


def cut_short_but_ended() -> bytes:
    """A JPEG cut short with an end marker put back: its header and end look whole, libjpeg-turbo (strict) refuses
    it, Pillow decodes what is there."""
    return photo(451, 300)[:6000] + b"\xff\xd9"


def test_files_the_device_cannot_decode_fall_back_one_by_one_to_the_cpu_paths_outcome(clip_224):
    files = [photo(451, 300), encoded(PHOTO[:300, :400], "PNG"),
             encoded(Image.fromarray(PHOTO[:300, :400]).convert("CMYK")), photo(451, 300)[:5000],
             with_exif(photo(451, 300), 6), cut_short_but_ended(), photo(300, 451)]
    cpu, device = encoder(clip_224, False), encoder(clip_224, True)
    kinds = [x.ndim if isinstance(x, np.ndarray) else "refused" for x in prepared(device, files)]
    assert kinds == [1, 3, 3, "refused", 3, 1, 1]  # bytes for the device; pixels from the CPU preparer
    expected, got = outcomes(cpu, files), outcomes(device, files)
    assert expected[3] == got[3] and got[3].startswith("truncated image: ")
    for want, have in zip(expected, got, strict=True):
        assert have == want if isinstance(want, str) else float(np.dot(want, have)) > 0.99


def test_a_batch_the_gpu_decoder_refuses_is_decoded_image_by_image(clip_224):
    """nvJPEG's part, played by libjpeg-turbo: it refuses the whole batch for one file, then that file alone."""
    device = encoder(clip_224, True)
    calls = []

    def refusing_decoder(tensors, device):
        calls.append(len(tensors))
        raw = [t.numpy().tobytes() for t in tensors]
        images = [decode_rgb(data, plain_header(data, LIMITS.max_image_pixels), None) for data in raw]
        if any(image is None for image in images):
            raise RuntimeError("nvjpeg refused a file")
        return [torch.from_numpy(image).permute(2, 0, 1).to(device) for image in images]

    device.device_images.nvjpeg = refusing_decoder
    files = [photo(451, 300), cut_short_but_ended(), photo(300, 451)]
    got = outcomes(device, files)
    assert calls == [3, 1, 1, 1]
    reference = outcomes(encoder(clip_224, False), files)
    assert cosines(got, reference).min() > 0.99
    assert np.array_equal(np.asarray(load_rgb(files[1])), np.asarray(Image.open(io.BytesIO(files[1])).convert("RGB")))


def test_embed_with_decode_device_gives_the_cpu_paths_vectors_within_tolerance(demo_dataset, tiny_clip, tmp_path):
    """`mmindex embed --decode device` on a CPU worker: the demo's photos (JPEGs) and clipart (PNGs, the CPU
    path) give the vectors `--decode cpu` gives, within tolerance, and the run records how it decoded."""
    from conftest import copy_dataset, embed

    vectors = {}
    for decode in ("cpu", "device"):
        dataset = copy_dataset(demo_dataset, tmp_path / decode)
        report = embed(dataset, str(tiny_clip), decode=decode, decode_workers=0, threads=1)
        assert not report.failures and not report.skipped
        store = EmbeddingStore.of(str(dataset), resolve_space(str(tiny_clip)))
        vectors[decode] = np.concatenate([store.vectors(n, "image") for n in store.dataset.committed_shards()])
        assert json.loads(Path(store.root, "stats.json").read_text())["runs"][-1]["settings"]["decode"] == decode
    cpu, device = (v.astype(np.float32) for v in (vectors["cpu"], vectors["device"]))
    assert len(cpu) == len(device) > 20
    assert cosines(list(cpu), list(device)).min() > 0.98


def test_the_device_check_benchmark_runs_here_through_the_cpu_fallback(tiny_clip, tmp_path):
    """benchmarks/device_check.sh runs embed_bench with --decode cpu device once on a GPU, with no time to rerun it:
    the same code path runs here (device decoding falls back to libjpeg-turbo in the worker), so it cannot fail
    there for a reason a CPU would show (it once crashed timing the model on a batch of JPEG bytes)."""
    command = [sys.executable, "benchmarks/embed_bench.py", "--model", str(tiny_clip), "--images", "24",
               "--batch-size", "8", "--decode-workers", "1", "--decode", "cpu", "device", "--seconds", "0.2",
               "--workdir", str(tmp_path)]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| image |")]
    assert [row[1].split()[0] for row in rows] == ["cpu", "device"] and all(row[3] == "24" for row in rows)
    assert "hand-over of a batch of 8 images" in done.stdout
