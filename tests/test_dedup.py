"""`mmindex dedup` and results without duplicates, on a small real corpus with known copies: demo photos with
copies made as a user's crawl makes them (PNG of a JPEG, smaller and recompressed, larger, grayscale, cropped 5%,
captioned), one distinct crop of a photo, a clip as FLAC at half gain and trimmed by 0.2 s, and a text retyped.
Ingested into several shards, embedded with a tiny CLIP, indexed: the real stages end to end."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
import soundfile
from PIL import Image, ImageDraw, ImageOps
from test_serve import clip_client_module
from typer.testing import CliRunner

from conftest import embed, ingest, read_table
from mmindex.cli import app
from mmindex.dataset import Dataset
from mmindex.dataset.duplicates import DuplicateStore, load_views
from mmindex.dataset.embeddings import EmbeddingStore
from mmindex.dataset.indexes import INDEX, published
from mmindex.dedup.pairs import Items, near_pairs
from mmindex.dedup.run import DedupSettings, dedup
from mmindex.demo import CORPUS
from mmindex.index.run import IndexSettings, build_indexes
from mmindex.index.store import IndexFiles, IndexStale
from mmindex.search import Query, Searcher
from mmindex.spaces import resolve_space

PHOTOS = ["coffee", "chelsea_cat", "astronaut", "rocket", "camera"]


def make_corpus(folder: Path) -> tuple[Path, Path]:
    """The originals in one folder, the copies in another (ingested later, for the incremental run)."""
    originals, copies = folder / "originals", folder / "copies"
    originals.mkdir(parents=True)
    copies.mkdir()
    for stem in PHOTOS:
        shutil.copy(CORPUS / "photos" / f"{stem}.jpg", originals / f"{stem}.jpg")
    shutil.copy(CORPUS / "sounds" / "cat.mp3", originals / "cat.mp3")
    shutil.copy(CORPUS / "sounds" / "dog.mp3", originals / "dog.mp3")
    (originals / "note.txt").write_text("Near-duplicates waste training compute and crowd search results.")
    coffee = Image.open(CORPUS / "photos" / "coffee.jpg").convert("RGB")
    w, h = coffee.size
    coffee.save(copies / "coffee_png.png")
    coffee.resize((w // 3, h // 3)).save(copies / "coffee_small.jpg", quality=30)
    coffee.resize((w * 3 // 2, h * 3 // 2)).save(copies / "coffee_large.jpg", quality=90)
    ImageOps.grayscale(coffee).save(copies / "coffee_gray.jpg")
    coffee.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(copies / "coffee_crop.jpg")
    marked = coffee.copy()
    ImageDraw.Draw(marked).text((10, h - 20), "(c) example.com", fill=(255, 255, 255))
    marked.save(copies / "coffee_marked.jpg")
    coffee.crop((0, 0, w * 3 // 5, h * 3 // 5)).save(copies / "coffee_part.jpg")   # another picture: not a copy
    clip, rate = soundfile.read(CORPUS / "sounds" / "cat.mp3")
    soundfile.write(copies / "cat_quiet.flac", clip * 0.5, rate)
    soundfile.write(copies / "cat_trimmed.wav", clip[int(0.2 * rate):], rate)
    (copies / "note_again.txt").write_text("near duplicates waste training compute, and crowd search results!")
    return originals, copies


def source_keys(dataset: Path) -> dict[str, str]:
    return {Path(row["source"]).stem: row["key"] for row in read_table(dataset / "samples")}


def groups_by_stem(dataset: Path, space: str = "offline") -> dict[str, list[list[str]]]:
    stems = {key: stem for stem, key in source_keys(dataset).items()}
    found: dict[str, dict[int, list[str]]] = {}
    for row in pq.read_table(dataset / "duplicates" / space / "duplicates.parquet").to_pylist():
        found.setdefault(row["modality"], {}).setdefault(row["group"], []).append(stems[row["key"]])
    return {m: sorted(sorted(g) for g in groups.values()) for m, groups in found.items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    return make_corpus(tmp_path_factory.mktemp("dedup") / "corpus")


@pytest.fixture(scope="module")
def deduplicated(corpus, tmp_path_factory) -> Path:
    """Both folders ingested at once (shards of 4) and deduplicated in one run, with a keep-list."""
    dataset = tmp_path_factory.mktemp("full") / "dataset"
    ingest(*corpus, dataset=dataset, extra=("--shard-size=4",))
    result = CliRunner().invoke(app, ["dedup", str(dataset), "--keep-list", str(dataset.parent / "keep.txt")])
    assert result.exit_code == 0, result.output
    assert "image" in result.output and "removable" in result.output and "keep-list" in result.output
    return dataset


def test_copies_group_together_and_look_alikes_stay_apart(deduplicated: Path):
    groups = groups_by_stem(deduplicated)
    assert groups["image"] == [["coffee", "coffee_crop", "coffee_gray", "coffee_large", "coffee_marked",
                                "coffee_png", "coffee_small"]]   # coffee_part, another crop, is in no group
    assert groups["audio"] == [["cat", "cat_quiet", "cat_trimmed"]]
    assert groups["text"] == [["note", "note_again"]]


def test_each_group_keeps_its_largest_member_and_the_keep_list_drops_the_rest(deduplicated: Path):
    keys = source_keys(deduplicated)
    rows = pq.read_table(deduplicated / "duplicates" / "offline" / "duplicates.parquet").to_pylist()
    representative = {row["modality"]: row["representative"] for row in rows}
    assert representative["image"] == keys["coffee_large"]          # the most pixels
    full_length = sorted((keys["cat"], keys["cat_quiet"]))           # the trimmed clip is shorter; then the key
    assert representative["audio"] == full_length[0]
    assert representative["text"] == keys["note_again"]              # the longer text
    for row in rows:
        assert (row["similarity"] == 1.0) == (row["key"] == row["representative"])
        assert row["similarity"] >= 0.9
    kept = (deduplicated.parent / "keep.txt").read_text().split()
    dropped = {row["key"] for row in rows if row["key"] != row["representative"]}
    assert sorted(kept) == kept and set(kept) == set(keys.values()) - dropped
    assert len(dropped) == 6 + 2 + 1


def test_an_incremental_run_equals_a_full_run_and_repeats_give_the_same_bytes(corpus, deduplicated: Path,
                                                                             tmp_path: Path):
    dataset = tmp_path / "dataset"
    ingest(corpus[0], dataset=dataset, extra=("--shard-size=4",))
    first = dedup(DedupSettings(str(dataset)))
    assert [m.groups for m in first.modalities] == [0, 0, 0]
    ingest(corpus[1], dataset=dataset, extra=("--shard-size=4",))
    second = dedup(DedupSettings(str(dataset)))
    assert second.described == len(Dataset(str(dataset)).committed_shards()) - first.described
    store = DuplicateStore(Dataset(str(dataset)), "offline")
    full = DuplicateStore(Dataset(str(deduplicated)), "offline")
    assert Path(store.duplicates_path).read_bytes() == Path(full.duplicates_path).read_bytes()
    for modality in ("image", "audio", "text"):
        assert Path(store.pairs_path(modality)).read_bytes() == Path(full.pairs_path(modality)).read_bytes()
    again = dedup(DedupSettings(str(dataset)))
    assert again.described == 0 and [m.new_shards for m in again.modalities] == [0, 0, 0]
    assert Path(store.duplicates_path).read_bytes() == Path(full.duplicates_path).read_bytes()


def test_on_beam_the_same_declared_stage_finds_the_same_groups(corpus, deduplicated: Path, tmp_path: Path):
    """The stage runs on any Beam runner (here its in-process runner) and writes the in-process executor's bytes."""
    from pipelines.executor import BeamExecutor

    dataset = tmp_path / "dataset"
    ingest(*corpus, dataset=dataset, extra=("--shard-size=4",))
    report = dedup(DedupSettings(str(dataset)), BeamExecutor([], 1))
    assert report.described == len(Dataset(str(dataset)).committed_shards())
    on_beam = DuplicateStore(Dataset(str(dataset)), "offline")
    local = DuplicateStore(Dataset(str(deduplicated)), "offline")
    assert Path(on_beam.duplicates_path).read_bytes() == Path(local.duplicates_path).read_bytes()
    for modality in ("image", "audio", "text"):
        assert Path(on_beam.pairs_path(modality)).read_bytes() == Path(local.pairs_path(modality)).read_bytes()


def test_another_threshold_compares_everything_again(deduplicated: Path, tmp_path: Path):
    dataset = shutil.copytree(deduplicated, tmp_path / "dataset")
    loose = dedup(DedupSettings(str(dataset), modalities=("image",), threshold=0.6))
    [image] = loose.modalities
    assert image.new_shards == len(Dataset(str(dataset)).committed_shards()) and image.removable >= 6
    assert groups_by_stem(Path(dataset))["audio"] == [["cat", "cat_quiet", "cat_trimmed"]]   # left as it was


@pytest.fixture(scope="module")
def indexed(deduplicated: Path, tiny_clip: Path, tmp_path_factory) -> tuple[Path, str]:
    """The deduplicated dataset embedded with a tiny CLIP and indexed; its groups found for that space too."""
    dataset = Path(shutil.copytree(deduplicated, tmp_path_factory.mktemp("indexed") / "dataset"))
    embed(dataset, str(tiny_clip), threads=1)
    build_indexes(IndexSettings(str(dataset), str(tiny_clip)))
    dedup(DedupSettings(str(dataset), str(tiny_clip)))
    return dataset, str(tiny_clip)


def test_search_with_dedup_returns_k_results_of_distinct_groups(indexed):
    dataset, model = indexed
    space = resolve_space(model)
    searcher = Searcher(str(dataset), space, ["image"])
    query = Query(image=str(CORPUS / "photos" / "coffee.jpg"))
    plain = searcher.search(query, k=5)
    distinct = searcher.search(query, k=5, dedup=0.94)
    group = {row["key"]: row["group"] for row in DuplicateStore(Dataset(str(dataset)), space.name).groups()
             if row["modality"] == "image"}
    assert len([h for h in plain if h["key"] in group]) > 1   # without it, copies of the coffee crowd the top
    assert len(distinct) == 5 and [h["rank"] for h in distinct] == [1, 2, 3, 4, 5]
    groups = [group[h["key"]] for h in distinct if h["key"] in group]
    assert len(groups) == len(set(groups)) == 1
    texts = Searcher(str(dataset), space, ["text"])  # two texts, one retyped: one result is all there is
    assert len(texts.search(Query(text="near duplicates"), k=3)) == 2
    assert len(texts.search(Query(text="near duplicates"), k=3, dedup=0.94)) == 1


def test_without_groups_a_range_check_over_the_hits_leaves_one_of_each_copy(indexed, tmp_path: Path):
    dataset, model = indexed
    bare = Path(shutil.copytree(dataset, tmp_path / "dataset"))
    shutil.rmtree(bare / "duplicates")
    searcher = Searcher(str(bare), resolve_space(model), ["image"])
    vector = searcher.embed(Query(image=str(CORPUS / "photos" / "coffee.jpg")))
    threshold = 0.999   # a tiny random CLIP puts every image close: 0.94 would leave two
    hits = searcher.search_vector(vector, k=4, dedup=threshold)
    assert len(hits) == 4
    loaded = searcher.indexes["image"]
    exact = IndexFiles(searcher.store, "image").exact(loaded)
    vectors = exact.take(np.array([loaded.keys.index(h["key"]) for h in hits]))
    similarities = vectors @ vectors.T
    assert (similarities[np.triu_indices(4, 1)] < threshold).all()
    plain = searcher.search_vector(vector, k=4)
    assert plain[0]["key"] == hits[0]["key"] and plain != hits   # the PNG copy of the query was left out


def test_clip_clients_deduplicate_flag_changes_the_answer(indexed):
    from mmindex.serve.app import create_app
    from mmindex.serve.catalog import load_catalog
    from mmindex.serve.settings import ServeSettings
    from serving import running

    dataset, _ = indexed
    server, thread, url = running(create_app(ServeSettings(("unused",)), load_catalog({"demo": str(dataset)})))
    try:
        image = CORPUS / "photos" / "coffee.jpg"
        module = clip_client_module()
        if module is not None:
            def ask(deduplicate: bool) -> list[dict]:
                client = module.ClipClient(url=f"{url}/knn-service", indice_name="demo", num_images=5,
                                           deduplicate=deduplicate)
                return client.query(image=str(image))
        else:
            def ask(deduplicate: bool) -> list[dict]:
                return requests.post(f"{url}/knn-service", json={
                    "indice_name": "demo", "num_images": 5, "modality": "image", "deduplicate": deduplicate,
                    "image": base64.b64encode(image.read_bytes()).decode()}, timeout=60).json()
        with_copies, without = ask(False), ask(True)
        assert len(with_copies) == len(without) == 5
        assert [h["key"] for h in with_copies] != [h["key"] for h in without]
        assert without[0]["key"] == with_copies[0]["key"]
        page = requests.post(f"{url}/search", json={"image": base64.b64encode(image.read_bytes()).decode(),
                                                   "modality": "image", "k": 5, "dedup": True}, timeout=60).json()
        assert [h["key"] for h in page["hits"]] == [h["key"] for h in without]
        refused = requests.post(f"{url}/search", json={"text": "coffee", "dedup": 3}, timeout=60)
        assert refused.status_code == 422 and "dedup" in refused.json()["error"]
    finally:
        server.should_exit = True
        thread.join()


@pytest.fixture
def excluding(indexed, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the indexed dataset, indexed again with --exclude-duplicates."""
    dataset, model = indexed
    copy = Path(shutil.copytree(dataset, tmp_path / "dataset"))
    result = CliRunner().invoke(app, ["index", str(copy), "--model", model, "--exclude-duplicates"])
    assert result.exit_code == 0, result.output
    assert "near-duplicates left out" in result.output
    return copy, model


def image_group(dataset: Path, space: str) -> tuple[set[str], str]:
    rows = [r for r in DuplicateStore(Dataset(str(dataset)), space).groups() if r["modality"] == "image"]
    [representative] = {r["representative"] for r in rows}
    return {r["key"] for r in rows}, representative


def index_check(dataset: Path, model: str):
    return CliRunner().invoke(app, ["index", str(dataset), "--model", model, "--check"])


def test_an_index_without_duplicates_holds_only_the_representative_of_a_group(excluding):
    dataset, model = excluding
    space = resolve_space(model)
    members, representative = image_group(dataset, space.name)
    searcher = Searcher(str(dataset), space, ["image"])
    images = [row for row in read_table(dataset / "samples") if "image" in row["modalities"]]
    hits = searcher.search(Query(image=str(CORPUS / "photos" / "coffee.jpg")), k=len(images))  # every image held
    assert {h["key"] for h in hits} & members == {representative} and hits[0]["key"] == representative
    assert len(hits) == len(images) - (len(members) - 1)
    info = IndexFiles(searcher.store, "image").info()
    assert info["excluded"]["vectors"] == len(members) - 1 and info["vectors"] == len(hits)
    loaded = searcher.indexes["image"]   # exact vectors by id: the embeddings' rows of the keys the index holds
    exact = IndexFiles(searcher.store, "image").exact(loaded).take(np.arange(len(loaded.keys)))
    for vector, key, shard in zip(exact, loaded.keys, loaded.shards, strict=True):
        table, arrays = searcher.store.read(int(shard))
        row = next(r["row"] for r in table.to_pylist() if r["key"] == key and r["modality"] == "image")
        assert np.array_equal(vector, arrays["image"][row].astype(np.float32))
    checked = index_check(dataset, model)
    assert checked.exit_code == 0, checked.output


def test_without_groups_exclude_duplicates_says_to_run_dedup(indexed, tmp_path: Path):
    dataset, model = indexed
    bare = Path(shutil.copytree(dataset, tmp_path / "dataset"))
    shutil.rmtree(bare / "duplicates")
    result = CliRunner().invoke(app, ["index", str(bare), "--model", model, "--exclude-duplicates"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert f"run `mmindex dedup {bare} --model" in result.output


def test_a_dedup_run_that_changes_the_groups_makes_the_index_stale(excluding):
    dataset, model = excluding
    space = resolve_space(model)
    rerun = dedup(DedupSettings(str(dataset), model, modalities=("image",), threshold=1.0))
    assert [m.removable for m in rerun.modalities] != [6]
    store = EmbeddingStore.of(str(dataset), space)
    IndexFiles(store, "text").check(keys=True)   # the text groups did not change: the text index is not stale
    with pytest.raises(IndexStale, match=r"changed \(`mmindex dedup` ran again\) since it was built"):
        IndexFiles(store, "image").check()
    result = CliRunner().invoke(app, ["search", "coffee", "-d", str(dataset), "--model", model, "--modality", "image"])
    assert result.exit_code == 2
    assert f"mmindex index {dataset} --model {space.name} --exclude-duplicates" in result.output


def test_update_after_new_shards_keeps_the_duplicates_out(excluding, tmp_path: Path):
    dataset, model = excluding
    space = resolve_space(model)
    more = tmp_path / "more"
    more.mkdir()
    coffee = Image.open(CORPUS / "photos" / "coffee.jpg").convert("RGB")
    coffee.resize((coffee.width // 4, coffee.height // 4)).save(more / "coffee_tiny.jpg", quality=60)
    shutil.copy(CORPUS / "photos" / "clock.jpg", more / "clock.jpg")
    before = IndexFiles(EmbeddingStore.of(str(dataset), space), "image").info()["excluded"]["vectors"]
    ingest(more, dataset=dataset, extra=("--shard-size=4",))
    embed(dataset, model, threads=1)
    dedup(DedupSettings(str(dataset), model))
    result = CliRunner().invoke(app, ["index", str(dataset), "--model", model, "--update"])
    assert result.exit_code == 0, result.output
    members, representative = image_group(dataset, space.name)
    keys = source_keys(dataset)
    assert keys["coffee_tiny"] in members and representative == keys["coffee_large"]
    searcher = Searcher(str(dataset), space, ["image"])
    hits = {h["key"] for h in searcher.search(Query(image=str(CORPUS / "photos" / "coffee.jpg")), k=20)}
    assert hits & members == {representative} and keys["clock"] in hits
    assert IndexFiles(searcher.store, "image").info()["excluded"]["vectors"] == before + 1
    checked = index_check(dataset, model)
    assert checked.exit_code == 0, checked.output


def test_the_pair_search_in_blocks_under_a_small_budget_finds_what_one_block_finds():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((12_000, 2, 16)).astype(np.float32)   # 24,000 views: the inverted file's size
    vectors[-300:] = vectors[:300] + 0.05 * rng.standard_normal((300, 2, 16)).astype(np.float32)   # copies
    vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
    shards = [part.astype(np.float16) for part in np.array_split(vectors, 5)]
    whole = near_pairs(Items([]), Items(shards), 0.9)
    budget = 2 * 4 * 16 * 512 * 40   # the sample that trains 512 lists just fits; the views of 10,240 items a block
    blocks = near_pairs(Items([]), Items(shards), 0.9, max_memory=budget)
    assert blocks == whole and {(i, 11_700 + i) for i in range(300)} <= {(i, j) for i, j, _ in whole}


def test_check_reads_the_duplicates_and_names_a_damaged_file_with_its_repair(deduplicated: Path, tmp_path: Path):
    dataset = Path(shutil.copytree(deduplicated, tmp_path / "dataset"))
    healthy = CliRunner().invoke(app, ["check", str(dataset)])
    assert healthy.exit_code == 0, healthy.output
    store = DuplicateStore(Dataset(str(dataset)), "offline")
    views, groups = sorted(Path(store.root, "descriptors", "image").glob("*.npy"))[-1], Path(store.duplicates_path)
    number = int(views.stem)
    damaged = bytearray(views.read_bytes())
    damaged[-1] ^= 0xFF   # one bit pattern changed: same size, another digest
    views.write_bytes(bytes(damaged))
    groups.write_bytes(groups.read_bytes()[:-10])
    result = CliRunner().invoke(app, ["check", str(dataset)])
    assert result.exit_code == 1
    output = " ".join(result.output.split())   # as printed, lines wrapped
    assert f"delete {store.descriptors_parquet(number)} and run `mmindex dedup {dataset} --model offline`" in output
    assert f"delete {groups} and {store.summary_path}" in output
    for path in (store.descriptors_parquet(number), groups, store.summary_path):   # the repairs it names work
        Path(path).unlink()
    dedup(DedupSettings(str(dataset)))
    assert CliRunner().invoke(app, ["check", str(dataset)]).exit_code == 0
    full = DuplicateStore(Dataset(str(deduplicated)), "offline")
    assert groups.read_bytes() == Path(full.duplicates_path).read_bytes()


def test_a_descriptor_file_that_is_no_npy_matrix_is_refused_in_words_never_a_crash(deduplicated: Path,
                                                                                   tmp_path: Path):
    """An .npz (a zip numpy opens without complaint) where a descriptor file should be: a finding, not a crash."""
    dataset = Path(shutil.copytree(deduplicated, tmp_path / "dataset"))
    store = DuplicateStore(Dataset(str(dataset)), "offline")
    views = sorted(Path(store.root, "descriptors", "image").glob("*.npy"))[-1]
    with views.open("wb") as out:
        np.savez(out, views=np.zeros((2, 3), np.float16))
    with pytest.raises(ValueError, match=r"is damaged .* run `mmindex dedup` again"):
        load_views(str(views))
    result = CliRunner().invoke(app, ["check", str(dataset)])
    assert result.exit_code == 1 and str(views) in " ".join(result.output.split())


def test_check_repair_rebuilds_an_index_without_duplicates_as_it_was_built(excluding):
    dataset, model = excluding
    files = IndexFiles(EmbeddingStore.of(str(dataset), resolve_space(model)), "image")
    index = Path(published(files.root).path(INDEX))
    index.write_bytes(index.read_bytes()[:-8])
    result = CliRunner().invoke(app, ["check", str(dataset), "--repair"])
    assert result.exit_code == 0, result.output
    assert files.info()["excluded"]["vectors"] == 6
    files.check(keys=True)


def test_eval_of_an_index_without_duplicates_counts_the_copy_it_stands_for(tiny_clip: Path, tmp_path: Path):
    """Captioned photos and captioned copies of the coffee photo, the copies left out of the index: eval reads each
    id's key (the index numbers only what it holds), and the representative found for a copy's caption counts as
    found, as search shows it. The index is exact at this size, so it ranks answers as high as exact search or
    higher (a copy gone can only lift the others)."""
    from mmindex.evaluate import evaluate
    from mmindex.index.settings import BuildSettings

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for stem in PHOTOS:
        shutil.copy(CORPUS / "photos" / f"{stem}.jpg", corpus / f"{stem}.jpg")
        shutil.copy(CORPUS / "photos" / f"{stem}.txt", corpus / f"{stem}.txt")
    coffee = Image.open(CORPUS / "photos" / "coffee.jpg").convert("RGB")
    for name, copy in (("coffee_png.png", coffee), ("coffee_small.jpg", coffee.resize((200, 133))),
                       ("coffee_gray.jpg", ImageOps.grayscale(coffee))):
        copy.save(corpus / name)
        (corpus / name).with_suffix(".txt").write_text(f"the coffee photo again, {name.split('_')[1][:-4]}")
    dataset = tmp_path / "dataset"
    ingest(corpus, dataset=dataset)
    embed(dataset, str(tiny_clip), threads=1)
    dedup(DedupSettings(str(dataset), str(tiny_clip)))
    build_indexes(IndexSettings(str(dataset), str(tiny_clip), BuildSettings(exclude_duplicates=True)))
    store = EmbeddingStore(Dataset(str(dataset)), resolve_space(str(tiny_clip)))
    members, _ = image_group(dataset, store.space.name)
    assert len(members) == 4
    [row] = [row for row in evaluate(store) if (row["query"], row["target"]) == ("caption", "image")]
    assert row["exact"]["queries"] == row["index"]["queries"] == len(PHOTOS) + 3
    for k in (1, 5):
        assert row["index"][f"recall@{k}"] >= row["exact"][f"recall@{k}"], row
