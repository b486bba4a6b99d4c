"""Bridge spaces with tiny random-weight CLIP + CLAP: the clip+clap preset's whole path through the real CLI
(embed, index, search audio with an image, eval, resume), and a changed mapping refused, never mixed."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from conftest import embed, ingest, read_table
from mmindex.bridge.learn import LearnSettings, held_out, learn, ridge_map
from mmindex.bridge.mapping import BadMapping, Mapping
from mmindex.cli import app
from mmindex.dataset.embeddings import SpaceMismatch
from mmindex.demo import CORPUS
from mmindex.spaces import resolve_space

ROOT = Path(__file__).resolve().parents[1]
CLIP, CLAP = "openai/clip-vit-base-patch32", "laion/clap-htsat-unfused"
FAST = {"steps": 30, "hidden": 8}


def hub_cache(folder: Path, models: dict[str, Path]) -> Path:
    """A Hugging Face hub cache holding the tiny models under the presets' model ids, as `hf download` leaves it."""
    for model_id, source in models.items():
        repo = folder / f"models--{model_id.replace('/', '--')}"
        commit = "0" * 40
        shutil.copytree(source, repo / "snapshots" / commit)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
    return folder


def cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mmindex", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def sounds_and_photos(tmp_path_factory) -> Path:
    """4 of the demo corpus's animal sounds and 2 of its photos, with their captions, in 2 shards (2 sounds and
    a photo fall in the held-out split)."""
    corpus = tmp_path_factory.mktemp("corpus")
    for folder, names in {"sounds": ("sheep", "rooster", "cat", "horse"), "photos": ("chelsea_cat", "coffee")}.items():
        (corpus / folder).mkdir()
        for name in names:
            for file in (CORPUS / folder).glob(f"{name}.*"):
                shutil.copy(file, corpus / folder)
    dataset = corpus.parent / "dataset"
    ingest(corpus, dataset=dataset, extra=("--shard-size=4",))
    return dataset


def copy_dataset(dataset: Path, folder: Path) -> Path:
    return Path(shutil.copytree(dataset, folder / "dataset"))


@pytest.fixture(scope="module")
def bridged(sounds_and_photos, tiny_clip, tiny_clap, tmp_path_factory) -> tuple[Path, Path]:
    """The dataset embedded with `--model clip+clap` (the tiny models standing in for the real ones)."""
    folder = tmp_path_factory.mktemp("bridge")
    cache = hub_cache(folder / "hub", {CLIP: tiny_clip, CLAP: tiny_clap})
    dataset = copy_dataset(sounds_and_photos, folder)
    done = cli("embed", str(dataset), "--model", "clip+clap", cache=cache)
    assert done.returncode == 0, done.stderr
    return dataset, cache


def stored(dataset: Path, space: str, modality: str) -> dict[str, np.ndarray]:
    """{key: vector} of one modality in a space, from the committed files."""
    root = dataset / "embeddings" / space
    out = {}
    for parquet in sorted(root.glob("*.parquet")):
        rows = [r for r in read_table_file(parquet) if r["modality"] == modality and r["row"] is not None]
        if rows:
            vectors = np.load(root / modality / parquet.with_suffix(".npy").name).astype(np.float32)
            out.update({r["key"]: vectors[r["row"]] for r in rows})
    return out


def read_table_file(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_clip_clap_holds_clip_images_and_text_and_clap_audio_mapped_into_clips_space(bridged, tiny_clip,
                                                                                     tiny_clap):
    dataset, _ = bridged
    root = dataset / "embeddings" / "clip+clap"
    record = json.loads((root / "space.json").read_text())["settings"]
    assert record["base"] == "clip" and record["bridged"] == "clap"
    assert record["mapping"]["texts"] > 1000 and len(record["mapping"]["texts_digest"]) == 16
    from mmindex.bridge.mapping import digest, load

    mapping, _ = load(str(root / "bridge.npz"))
    assert digest((root / "bridge.npz").read_bytes()) == record["mapping"]["digest"]
    samples = {r["key"]: r for r in read_table(dataset / "samples")}
    audio = stored(dataset, "clip+clap", "audio")
    assert len(audio) == sum("audio" in s["modalities"] for s in samples.values()) == 4
    clap = resolve_space(str(tiny_clap)).load("cpu")["audio"]
    clip = resolve_space(str(tiny_clip)).load("cpu")["image"]
    key = sorted(audio)[0]
    raw = Path(samples[key]["source"]).read_bytes()
    expected = mapping(clap.encode([clap.preparer()(raw)]).vectors)[0]
    assert np.allclose(audio[key], expected, atol=2e-3)  # CLAP's vector, through the stored mapping
    images = stored(dataset, "clip+clap", "image")
    key = sorted(images)[0]
    own = clip.encode([clip.preparer()(Path(samples[key]["source"]).read_bytes())]).vectors[0]
    assert np.allclose(images[key], own, atol=2e-3)  # CLIP's own vector, untouched


def test_index_search_audio_with_an_image_eval_and_resume(bridged):
    dataset, cache = bridged
    assert cli("index", str(dataset), "--model", "clip+clap", cache=cache).returncode == 0
    image = next(p for p in (ROOT / "mmindex/demo/corpus/photos").glob("*.jpg"))
    found = cli("search", "--dataset", str(dataset), "--model", "clip+clap", "--image", str(image),
                "--modality", "audio", "--json", "-k", "3", cache=cache)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert len(hits) == 3 and {h["modality"] for h in hits} == {"audio"}
    report = cli("eval", str(dataset), "--model", "clip+clap", "--json", cache=cache)
    assert report.returncode == 0, report.stderr
    rows = {(r["query"], r["target"]): r for r in json.loads(report.stdout)}
    assert rows["caption", "audio"]["through_bridge"] and not rows["caption", "image"]["through_bridge"]
    held = sum(held_out(r["key"]) for r in read_table(dataset / "samples") if "audio" in r["modalities"])
    assert rows["caption", "audio"]["exact"]["queries"] == held and 0 < held < 4
    assert "held-out" in rows["caption", "audio"]["queries_from"]
    table = cli("eval", str(dataset), "--model", "clip+clap", cache=cache)
    assert "held-out samples only" in table.stdout and "(bridged)" in table.stdout
    before = {p.name: p.read_bytes() for p in (dataset / "embeddings/clip+clap").rglob("*.np[yz]")}
    (dataset / "embeddings/clip+clap/000001.parquet").unlink()
    resumed = cli("embed", str(dataset), "--model", "clip+clap", cache=cache)
    assert resumed.returncode == 0 and "learning" not in resumed.stderr, resumed.stderr
    after = {p.name: p.read_bytes() for p in (dataset / "embeddings/clip+clap").rglob("*.np[yz]")}
    assert after == before  # the same mapping, so the re-embedded shard's vectors are the same


def bridge_file(folder: Path, tiny_clip: Path, tiny_clap: Path, **extra) -> str:
    folder.mkdir(exist_ok=True)
    path = folder / "tinybridge.yaml"
    path.write_text(yaml.safe_dump({"kind": "bridge", "base": str(tiny_clip), "bridged": str(tiny_clap),
                                    "texts": ["captions", "wordnet"], "max_texts": 500, "learn": FAST, **extra}))
    return str(path)


def test_a_changed_mapping_or_bridge_setting_is_refused_never_mixed(sounds_and_photos, tiny_clip, tiny_clap,
                                                                   tmp_path):
    dataset = copy_dataset(sounds_and_photos, tmp_path)
    space = bridge_file(tmp_path, tiny_clip, tiny_clap)
    embed(dataset, space)
    mapping_file = dataset / "embeddings/tinybridge/bridge.npz"
    original = mapping_file.read_bytes()
    other = Mapping.from_bytes(original)
    mapping_file.write_bytes(Mapping(other.mean, other.weight * 2, *list(vars(other).values())[2:]).to_bytes())
    (dataset / "embeddings/tinybridge/000001.parquet").unlink()
    with pytest.raises(SpaceMismatch, match="not the mapping"):
        embed(dataset, space)
    for command in ("eval", "index"):  # every stage refuses it, in one line that says what to do
        result = CliRunner().invoke(app, [command, str(dataset), "--model", space])
        assert result.exit_code == 2 and "not the mapping" in result.output and "Traceback" not in result.output
    mapping_file.unlink()
    with pytest.raises(SpaceMismatch, match="missing"):
        embed(dataset, space)
    mapping_file.write_bytes(original)
    changed = bridge_file(tmp_path / "changed", tiny_clip, tiny_clap, learn={**FAST, "seed": 1})
    with pytest.raises(SpaceMismatch, match="other settings"):
        embed(dataset, changed)
    assert embed(dataset, space).committed == 1  # the right mapping back: the missing shard, nothing else


def test_bad_bridge_files_and_mappings_are_refused_with_a_reason(tmp_path, tiny_clip, tiny_clap):
    def refused(settings: dict, match: str) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({"kind": "bridge", **settings}))
        with pytest.raises(ValueError, match=match):
            resolve_space(str(path))

    refused({"base": str(tiny_clip), "texts": ["wordnet"]}, "needs 'bridged'")
    refused({"base": str(tiny_clip), "bridged": str(tiny_clap)}, "needs 'texts'")
    refused({"base": "clip+clap", "bridged": str(tiny_clap), "texts": ["wordnet"]}, "itself a bridge")
    refused({"base": str(tiny_clip), "bridged": str(tiny_clap), "texts": ["wordnet"], "learn": {"method": "svd"}},
            "method")
    for hostile in (b"PK\x03\x04 not an npz", pickle.dumps({"weight": np.eye(2)}), object_arrays()):
        with pytest.raises(BadMapping):
            Mapping.from_bytes(hostile)
    good = ridge_map(np.eye(4), np.eye(4), 0.1)
    with pytest.raises(BadMapping, match="expected finite floats"):
        Mapping(good.mean, good.weight[:, :2], *list(vars(good).values())[2:])


def object_arrays() -> bytes:
    """An .npz whose arrays are pickled objects: loading them would run code, so it must be refused unread."""
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.array([None, "x"], dtype=object) for name in ("mean", "weight", "bias", "hidden_in",
                                                                              "hidden_bias", "hidden_out")})
    return buffer.getvalue()


def test_learning_is_reproducible_and_starts_from_the_ridge_floor():
    """The same texts and settings give the same mapping file (so the same digest); another seed another one.
    (That the contrastive method beats ridge on held-out pairs is measured on real text embeddings in
    benchmarks/make_multilingual_bridge.py.)"""
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(300, 12)), rng.normal(size=(300, 8))
    source /= np.linalg.norm(source, axis=1, keepdims=True)
    target /= np.linalg.norm(target, axis=1, keepdims=True)
    settings = LearnSettings(steps=20, batch=64, hidden=8)
    first = learn(source, target, settings).to_bytes()
    assert learn(source, target, settings).to_bytes() == first
    assert learn(source, target, LearnSettings(steps=20, batch=64, hidden=8, seed=1)).to_bytes() != first
    floor = learn(source, target, LearnSettings(method="ridge", ridge=0.5))
    centred = source - source.mean(axis=0)
    normal = (centred.T @ centred + 0.5 * np.eye(12)) @ floor.weight - centred.T @ (target - target.mean(axis=0))
    assert np.abs(normal).max() < 1e-4  # the least-squares normal equations hold
    assert learn(source, target, LearnSettings(steps=0)).to_bytes() == ridge_map(source, target, 0.1).to_bytes()
    with pytest.raises(ValueError, match="at least 2"):
        learn(source[:1], target[:1])
