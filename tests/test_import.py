"""`mmindex import`: embeddings made elsewhere, in LAION's layout, become a space's vectors that index, search, serve
and check work on; and searches by vector (the CLI's --vectors, /search's vector, ClipClient's embedding_input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from typer.testing import CliRunner

from conftest import file_digests
from mmindex.check.run import CheckSettings, check
from mmindex.cli import app
from mmindex.index.run import IndexSettings, build_indexes
from mmindex.search import Query, Searcher
from mmindex.spaces import resolve_space
from serving import running

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
DIM = 16


def laion(folder: Path, sizes: tuple[int, ...] = (40, 24), vectors: list[np.ndarray] | None = None) -> Path:
    """A small release in LAION's layout: img_emb/img_emb_NNNN.npy (float16) beside metadata/metadata_NNNN.parquet
    (url, caption, key, similarity, width, height), row for row; clustered vectors, a fixed seed."""
    rng = np.random.default_rng(7)
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    centres = rng.standard_normal((4, DIM))
    for number, size in enumerate(sizes):
        made = centres[rng.integers(0, 4, size)] + 0.3 * rng.standard_normal((size, DIM))
        rows = vectors[number] if vectors else made
        np.save(folder / "img_emb" / f"img_emb_{number:04d}.npy", rows.astype(np.float16))
        pq.write_table(pa.table({
            "url": [f"https://example.com/{number}/{i}.jpg" for i in range(size)],
            "caption": [f"photo {i} of part {number}" for i in range(size)],
            "key": [f"{number:04d}{i:05d}" for i in range(size)],
            "similarity": rng.random(size), "width": [640] * size, "height": [480] * size,
        }), folder / "metadata" / f"metadata_{number:04d}.parquet")
    return folder


def import_(release: Path, dataset: Path, model: str = "laion-vectors", *files: str):
    sources = files or (str(release / "img_emb"),)
    return runner.invoke(app, ["import", *sources, "--metadata", str(release / "metadata"), "--key-column", "key",
                               "--out", str(dataset), "--model", model])


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    """A release imported into a space of vectors only and indexed: shared, read-only."""
    folder = tmp_path_factory.mktemp("imported")
    release = laion(folder / "release")
    result = import_(release, folder / "dataset")
    assert result.exit_code == 0, result.output
    assert "Imported 64 vectors (16-d) from 2 files into space 'laion-vectors'" in result.output
    build_indexes(IndexSettings(str(folder / "dataset"), "laion-vectors"))
    return folder


def test_a_laion_release_through_a_clip_space_answers_text_queries_and_checks_clean(tmp_path, tiny_clip):
    """Vectors made by the space's own text tower from the captions: a caption's text query finds its sample."""
    space = resolve_space(str(tiny_clip))
    encoder = space.query_encoder("text")
    captions = [[f"photo {i} of part {n}" for i in range(size)] for n, size in enumerate((12, 8))]
    vectors = [np.asarray(encoder.encode([encoder.preparer()(c.encode()) for c in part]).vectors) for part in captions]
    release = laion(tmp_path / "release", (12, 8), vectors)
    assert import_(release, tmp_path / "dataset", str(tiny_clip)).exit_code == 0
    build_indexes(IndexSettings(str(tmp_path / "dataset"), str(tiny_clip)))
    hits = Searcher(str(tmp_path / "dataset"), space).search(Query(text="photo 5 of part 1"), k=3)
    assert hits[0]["key"] == "000100005" and hits[0]["caption"] == "photo 5 of part 1"
    assert hits[0]["score"] > 0.99 and hits[0]["source"].endswith("img_emb_0001.npy#row=5")
    report = check(CheckSettings(str(tmp_path / "dataset")))
    assert report.files > 0 and not report.found and not report.damaged
    assert runner.invoke(app, ["check", str(tmp_path / "dataset")]).exit_code == 0
    sample = pq.read_table(tmp_path / "dataset" / "samples" / "000001.parquet").to_pylist()[5]
    assert sample["width"] == 640 and sample["members"] == ["json", "txt"] and sample["key"] == "000100005"


def test_the_laion_preset_is_clip_vit_l_14_known_as_768_d_without_its_weights():
    space = resolve_space(str(ROOT / "configs" / "spaces" / "laion-vit-l-14.yaml"))
    assert space.settings["model"] == "openai/clip-vit-large-patch14" and space.dimension() == 768


def test_vector_queries_on_the_cli_one_json_line_each(imported):
    dataset = imported / "dataset"
    queries = np.load(imported / "release" / "img_emb" / "img_emb_0001.npy")[[3, 7]]
    np.save(imported / "q.npy", queries.astype(np.float32) * 5)  # any scale: queries are normalised
    result = runner.invoke(app, ["search", "--vectors", str(imported / "q.npy"), "-d", str(dataset), "--model",
                                 "laion-vectors", "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["query"] for line in lines] == [{"vector": 0}, {"vector": 1}]
    first = lines[0]["results"][0]
    assert first["key"] == "000100003" and first["caption"] == "photo 3 of part 1" and first["score"] > 0.999
    assert lines[1]["results"][0]["key"] == "000100007"
    np.save(imported / "short.npy", np.ones((2, 8), np.float32))
    wrong = runner.invoke(app, ["search", "--vectors", str(imported / "short.npy"), "-d", str(dataset), "--model",
                                "laion-vectors"])
    assert wrong.exit_code == 2 and wrong.stdout == ""
    assert wrong.stderr.strip() == ("Error: the query vector has 8 dimensions, but space 'laion-vectors' holds 16-d "
                                    "vectors: give a list of 16 numbers")
    text = runner.invoke(app, ["search", "a cat", "-d", str(dataset), "--model", "laion-vectors"])
    assert text.exit_code == 2 and "has no text encoder (its vectors were imported): query it by vector" in text.stderr
    embed = runner.invoke(app, ["embed", str(dataset), "--model", "laion-vectors"])
    assert embed.exit_code == 2 and "holds imported vectors and has no encoder" in embed.stderr


def test_vector_queries_over_http_search_and_clip_retrieval_client(imported):
    from test_serve import clip_client_module  # clip-retrieval's real ClipClient, loaded as test_serve loads it

    from mmindex.serve.app import create_app
    from mmindex.serve.catalog import load_catalog
    from mmindex.serve.settings import ServeSettings

    vector = np.load(imported / "release" / "img_emb" / "img_emb_0000.npy")[11].astype(float).tolist()
    server, thread, url = running(create_app(ServeSettings(("unused",)),
                                             load_catalog({"laion": str(imported / "dataset")})))
    try:
        found = requests.post(f"{url}/search", json={"vector": vector, "k": 2}, timeout=30)
        assert found.status_code == 200, found.text
        assert found.json()["hits"][0]["key"] == "000000011" and found.json()["hits"][0]["caption"] == \
            "photo 11 of part 0"
        for bad, words in (([0.5] * 3, "holds 16-d vectors"), ([float("nan")] * DIM, "finite"),
                           ([1] * 9000, "at most 8,192 numbers"), ("0.1,0.2", "a list"), ([0] * DIM, "not zero")):
            refused = requests.post(f"{url}/search", data=json.dumps({"vector": bad}), timeout=30,
                                    headers={"Content-Type": "application/json"})
            assert refused.status_code == 422 and words in refused.json()["error"], (bad, refused.text)
        both = requests.post(f"{url}/search", json={"vector": vector, "text": "a cat"}, timeout=30)
        assert both.status_code == 422 and "no text, image or audio beside it" in both.json()["error"]
        module = clip_client_module()
        if module is not None:
            hits = module.ClipClient(url=f"{url}/knn-service", indice_name="laion", num_images=3).query(
                embedding_input=vector)
        else:
            hits = requests.post(f"{url}/knn-service", json={"embedding_input": vector, "indice_name": "laion",
                                                             "num_images": 3, "modality": "image"}, timeout=30).json()
        assert hits[0]["key"] == "000000011" and hits[0]["caption"] == "photo 11 of part 0" and len(hits) == 3
        assert hits[0]["similarity"] >= hits[1]["similarity"]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_repeat_does_nothing_and_new_files_are_added_alone(tmp_path):
    release = laion(tmp_path / "release", (10, 6, 4))
    dataset = tmp_path / "dataset"
    first = import_(release, dataset, "laion-vectors", *(str(release / "img_emb" / f"img_emb_000{n}.npy")
                                                         for n in (0, 1)))
    assert first.exit_code == 0 and "Imported 16 vectors (16-d) from 2 files" in first.output
    before = {path: (dataset / path).stat().st_mtime_ns for path in file_digests(dataset) if path != "mmindex.json"}
    added = import_(release, dataset)
    assert added.exit_code == 0 and "Imported 4 vectors (16-d) from 1 file " in added.output
    assert "(2 imported before)" in added.output
    assert {path: (dataset / path).stat().st_mtime_ns for path in before} == before  # the first files untouched
    assert sorted(p.name for p in (dataset / "samples").iterdir()) == ["000000.parquet", "000001.parquet",
                                                                       "000002.parquet"]
    again = import_(release, dataset)
    assert again.exit_code == 0 and again.output.startswith("Nothing to do: every file (3 files) is already imported")


def test_the_same_input_gives_the_same_bytes(tmp_path):
    release = laion(tmp_path / "release", (30, 5))
    digests = []
    for name in ("one", "two"):
        assert import_(release, tmp_path / name).exit_code == 0
        digests.append({p: d for p, d in file_digests(tmp_path / name).items() if p != "mmindex.json"})
    assert digests[0] == digests[1] and any(p.endswith(".npy") for p in digests[0])
    stored = np.load(tmp_path / "one" / "embeddings" / "laion-vectors" / "image" / "000000.npy")
    assert stored.dtype == np.float16 and np.allclose(np.linalg.norm(stored.astype(np.float32), axis=1), 1, atol=1e-3)


def _save(path: Path, array: np.ndarray, allow_pickle: bool = False) -> None:
    np.save(path, array, allow_pickle=allow_pickle)


def _spoil(release: Path, how: str) -> str:
    """Spoils the release's second file as ``how`` says; returns the path the error must name."""
    npy, meta = release / "img_emb" / "img_emb_0001.npy", release / "metadata" / "metadata_0001.parquet"
    rows = np.load(npy)
    if how == "counts":
        pq.write_table(pq.read_table(meta).slice(0, 5), meta)
        return str(meta)
    if how == "dimension":
        _save(npy, rows[:, :8])
    elif how == "dtype":
        _save(npy, rows.astype(np.int64))
    elif how in ("nan", "inf"):
        rows[3, 2] = np.nan if how == "nan" else np.inf
        _save(npy, rows)
    elif how == "truncated":
        npy.write_bytes(npy.read_bytes()[:-100])
    elif how == "pickle":
        _save(npy, np.array([{"a": 1}] * len(rows), dtype=object), allow_pickle=True)
    elif how == "duplicate key":
        table = pq.read_table(meta)
        keys = table.column("key").to_pylist()
        pq.write_table(table.set_column(2, "key", pa.array([keys[0], *keys[:-1]])), meta)
        return str(meta)
    return str(npy)


@pytest.mark.parametrize("how, words", [
    ("counts", "5 rows, but"), ("dimension", "8-d vectors, but"), ("dtype", "int64 values; import takes float16"),
    ("truncated", "truncated"), ("pickle", "a pickle"),                       # found before anything is written
    ("nan", "row 3 holds NaN or inf"), ("inf", "row 3 holds NaN or inf"),     # found as the file is read
    ("duplicate key", "is in rows 0 and 1"),
])
def test_bad_input_is_one_line_naming_the_file_and_nothing_is_left(tmp_path, how, words):
    release = laion(tmp_path / "release", (6, 8))
    named = _spoil(release, how)
    dataset = tmp_path / "dataset"
    alone = how in ("nan", "inf", "duplicate key")  # a file refused as it is read is refused alone: import it alone
    result = import_(release, dataset, "laion-vectors", *([str(release / "img_emb" / "img_emb_0001.npy")] if alone
                                                          else [str(release / "img_emb")]))
    assert result.exit_code in (1, 2), result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"Error: {named}: ") and words in result.stderr, result.stderr
    assert not dataset.exists()


def test_a_bad_file_is_refused_alone_and_the_others_are_imported(tmp_path):
    release = laion(tmp_path / "release", (6, 8))
    _spoil(release, "nan")
    result = import_(release, tmp_path / "dataset")
    assert result.exit_code == 1 and "Imported 6 vectors (16-d) from 1 file" in result.stdout
    assert result.stderr.count("\n") == 1 and "img_emb_0001.npy: row 3 holds NaN or inf" in result.stderr
    assert sorted(p.name for p in (tmp_path / "dataset" / "samples").iterdir()) == ["000000.parquet"]
    assert not list((tmp_path / "dataset").rglob(".tmp-*"))
