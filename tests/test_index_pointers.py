"""Files that name other files: an index's CURRENT names its live generation. A damaged one (any bytes, a path
out of the dataset, a link) is never followed: `check` names it, `check --repair` points it at the newest
complete generation (or removes it and rebuilds the index), `search` says what to run, and a server starts
anyway, serves the other modalities, says what is damaged in /info, and serves the index again once repaired."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import copy_dataset
from mmindex.cli import app
from serving import start_server

DAMAGES = {
    "bytes": b"g0000\x00\xff",
    "a path out of the dataset": b"../../../../etc",
    "a path inside it": b"g000001/../../text/g000001",
    "empty": b"",
    "a link out of the dataset": b"g000099",   # with g000099 -> /etc
}


def image_index(dataset: Path) -> Path:
    return dataset / "indexes" / "offline" / "image"


def damage(dataset: Path, how: str) -> Path:
    folder = image_index(dataset)
    if how == "a link out of the dataset":
        os.symlink("/etc", folder / "g000099")
    (folder / "CURRENT").write_bytes(DAMAGES[how])
    return folder / "CURRENT"


def run(*args: str):
    return CliRunner().invoke(app, [*args])


@pytest.mark.parametrize("how", DAMAGES)
def test_check_names_a_damaged_current_and_repair_points_it_at_the_newest_generation(indexed_small, tmp_path, how):
    dataset = copy_dataset(indexed_small, tmp_path)
    live = (image_index(dataset) / "CURRENT").read_text()
    pointer = damage(dataset, how)
    found = run("check", str(dataset))
    assert found.exit_code == 1 and str(pointer) in found.output and "--repair" in found.output, found.output
    assert "Traceback" not in found.output
    searched = run("search", "a cat", "--dataset", str(dataset), "--modality", "image")
    assert searched.exit_code == 2 and f"mmindex check {dataset} --repair" in searched.output, searched.output
    others = run("search", "a cat", "--dataset", str(dataset), "--modality", "all", "--json")
    assert others.exit_code == 0 and "damaged" in others.output, others.output   # text and audio still searched
    repaired = run("check", str(dataset), "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert pointer.read_text() == live
    assert run("check", str(dataset)).exit_code == 0


def test_with_no_complete_generation_repair_removes_current_and_rebuilds_the_index(indexed_small, tmp_path):
    dataset = copy_dataset(indexed_small, tmp_path)
    pointer = damage(dataset, "bytes")
    for generation in image_index(dataset).glob("g*"):
        (generation / "info.json").unlink()   # none complete
    repaired = run("check", str(dataset), "--repair")
    assert repaired.exit_code == 0 and "removed" in repaired.output and "rebuilt" in repaired.output, repaired.output
    assert pointer.read_bytes().startswith(b"g") and run("check", str(dataset)).exit_code == 0


def test_a_server_starts_with_a_damaged_index_serves_the_rest_and_takes_the_repair(indexed_small, tmp_path):
    dataset = copy_dataset(indexed_small, tmp_path)
    pointer = damage(dataset, "a path out of the dataset")
    server = start_server(dataset)
    try:
        [space] = server.http.get(f"{server.url}/info", timeout=10).json()["datasets"][0]["spaces"]
        assert [d["modality"] for d in space["damaged"]] == ["image"] and str(pointer) in space["damaged"][0]["problem"]
        assert {i["modality"] for i in space["indexes"]} == {"audio", "text"}
        text = server.search(text="a photo of a cat", modality="text", k=1)
        assert text.status_code == 200 and text.json()["hits"], text.text
        assert server.search(text="a photo of a cat", k=3).status_code == 200   # every modality left
        image = server.search(text="a photo of a cat", modality="image", k=1)
        assert image.status_code == 422 and "--repair" in image.json()["error"]
        assert run("check", str(dataset), "--repair").exit_code == 0
        image = server.search(text="a photo of a cat", modality="image", k=1)
        assert image.status_code == 200 and image.json()["hits"][0]["key"] == server.key("chelsea_cat")
        assert server.http.get(f"{server.url}/info", timeout=10).json()["datasets"][0]["spaces"][0]["damaged"] == []
    finally:
        server.stop()


def test_a_space_is_named_by_its_folder_never_by_the_name_its_file_holds(indexed_small, tmp_path):
    from mmindex.dataset import Dataset
    from mmindex.dataset.embeddings import recorded_spaces

    dataset = copy_dataset(indexed_small, tmp_path)
    space_file = dataset / "embeddings" / "offline" / "space.json"
    recorded = json.loads(space_file.read_text())
    space_file.write_text(json.dumps({**recorded, "name": "../../../../../../tmp/elsewhere"}))
    assert [space.name for space in recorded_spaces(Dataset(str(dataset)))] == ["offline"]
    checked = run("check", str(dataset))
    assert "elsewhere" not in checked.output and "Traceback" not in checked.output, checked.output


def test_with_every_index_damaged_search_says_what_to_run(indexed_small, tmp_path):
    dataset = copy_dataset(indexed_small, tmp_path)
    for modality in ("image", "audio", "text"):
        (dataset / "indexes" / "offline" / modality / "CURRENT").write_bytes(b"\xff")
    searched = run("search", "a cat", "--dataset", str(dataset), "--modality", "all")
    assert searched.exit_code == 2 and f"mmindex check {dataset} --repair" in searched.output, searched.output
    assert "Traceback" not in searched.output
