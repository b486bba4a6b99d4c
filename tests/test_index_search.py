"""`mmindex index`, `search` and `eval`: index choice and recall, update, consistency, queries, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import add_shard, copy_dataset, synthetic_dataset, synthetic_space_file
from mmindex.cli import app
from mmindex.evaluate import evaluate
from mmindex.index.choose import choose
from mmindex.index.run import build_index
from mmindex.index.settings import BuildSettings
from mmindex.index.store import IndexFiles, IndexStale
from mmindex.index.tune import exact_neighbours, recall
from mmindex.index.vectors import modality_shards

runner = CliRunner()


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors around random centres: the structure real embeddings have (random isotropic vectors make
    recall figures meaningless)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def image_shards(vectors: np.ndarray, per_shard: int, prefix: str = "k") -> list[list[tuple]]:
    return [[(f"{prefix}{i:07d}", None, {"image": vectors[i]}) for i in range(start, min(start + per_shard,
                                                                                          len(vectors)))]
            for start in range(0, len(vectors), per_shard)]


def test_the_choice_follows_size_and_memory():
    assert choose(5_000, 384, 2**30, 0.95).factory == "Flat"
    assert choose(1_000_000, 384, 2**40, 1.0).factory == "Flat"
    assert choose(1_000_000, 384, 8 * 2**30, 0.95).factory == "IVF4096,Flat"
    assert choose(1_000_000, 384, 2**30, 0.95).factory == "IVF4096,SQ8"          # float32 would need 1.5 GB
    # 64 bytes a vector fit; training holds a quarter of the budget (17,066 vectors): 256 lists of 40 or more
    assert choose(1_000_000, 384, 100 * 2**20, 0.95).factory == "IVF256,PQ64"
    # a billion vectors: 65,536 lists, found through a graph of the centroids; 32 bytes a vector fit 40 GB
    assert choose(10**9, 768, 40 * 10**9, 0.95).factory == "IVF65536_HNSW32,PQ32"
    with pytest.raises(MemoryError, match="--max-memory"):
        choose(1_000_000, 384, 2**20, 0.95)
    # lists on disk: only the parts being filled (two of a shard each) hold codes, and never more than SQ8's
    assert choose(10_000_000, 384, 10**9, 0.95, largest_part=1_000_000).factory == "IVF2048,SQ8"
    assert choose(10_000_000, 384, 10**9, 0.95, largest_part=5_000_000).factory == "IVF2048,PQ64"
    assert choose(1_000_000, 384, 8 * 2**30, 0.95, largest_part=100_000).factory == "IVF4096,SQ8"
    # ... and a probe reads at most 4 MiB of a list: LAION-5B's 85,000 vectors a list get 48 bytes each
    assert choose(5_550_000_000, 768, 64 * 10**9, 0.95, largest_part=1_000_000).factory == "IVF65536_HNSW32,PQ48"


def test_the_automatic_index_meets_its_target_recall_on_clustered_data(tmp_path):
    store = synthetic_dataset(tmp_path / "ds", image_shards(clustered(60_000, 64, 300, seed=0), 20_000))
    files = IndexFiles(store, "image")
    info = build_index(files, BuildSettings(target_recall=0.95))
    assert info["type"].startswith("IVF") and info["recall_at_10"] >= 0.95 and info["parameters"]["nprobe"] >= 1
    # measured again, independently, on fresh queries from the same distribution
    index, keys, _ = files.load()
    queries = clustered(60_500, 64, 300, seed=0)[60_000:]  # same seed: same centres, 500 points not indexed
    truth = exact_neighbours(list(modality_shards(store, "image")), queries)
    assert recall(index.search(queries, 10)[1], truth).mean() >= 0.93
    assert len(keys) == index.ntotal == 60_000 and info["shards"] == {"000000": 20_000, "000001": 20_000,
                                                                      "000002": 20_000}


def fresh_recall(files: IndexFiles, queries: np.ndarray) -> float:
    index, _, _ = files.load()
    truth = exact_neighbours(list(modality_shards(files.embeddings, files.modality)), queries)
    return float(recall(index.search(queries, 10)[1], truth).mean())


def test_a_tight_memory_budget_still_meets_the_target_by_re_ranking_from_the_embeddings(tmp_path):
    vectors = clustered(30_500, 64, 100, seed=4)
    store = synthetic_dataset(tmp_path / "ds", image_shards(vectors[:30_000], 10_000))
    files = IndexFiles(store, "image")
    info = build_index(files, BuildSettings(max_memory=300_000))  # two shards' codes at 8 bytes a vector
    assert info["type"].endswith(",PQ8") and info["rerank"] >= 1 and info["target_met"]
    assert info["recall_at_10"] >= 0.95 and fresh_recall(files, vectors[30_000:]) >= 0.93
    index, _, _ = files.load()
    index.rerank = 0  # the codes alone rank far worse: re-ranking is what meets the target
    truth = exact_neighbours(list(modality_shards(store, "image")), vectors[30_000:])
    assert recall(index.search(vectors[30_000:], 10)[1], truth).mean() < 0.8


def test_hnsw_is_tuned_by_ef_search_and_its_recorded_recall_is_what_fresh_queries_get(tmp_path):
    vectors = clustered(20_500, 32, 50, seed=5)
    store = synthetic_dataset(tmp_path / "ds", image_shards(vectors[:20_000], 10_000))
    files = IndexFiles(store, "image")
    info = build_index(files, BuildSettings(index_type="HNSW16,Flat"))
    assert set(info["parameters"]) == {"efSearch"} and info["rerank"] == 0 and info["chosen_by"] == "--index-type"
    assert info["recall_at_10"] >= 0.95
    assert abs(fresh_recall(files, vectors[20_000:]) - info["recall_at_10"]) <= 0.03


def test_recall_is_measured_per_query_modality_as_cross_modal_searches_run(tmp_path):
    rng = np.random.default_rng(6)
    centres = rng.standard_normal((200, 48))
    topic = rng.integers(0, 200, 24_500)
    unit = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    images = unit(centres[topic] + 0.35 * rng.standard_normal((24_500, 48)))
    captions = unit(centres[topic] + 0.9 * rng.standard_normal((24_500, 48)))  # further from any one image
    samples = [(f"k{i:06d}", None, {"image": images[i], "text": captions[i]}) for i in range(24_000)]
    store = synthetic_dataset(tmp_path / "ds", [samples[:12_000], samples[12_000:]])
    files = IndexFiles(store, "image")
    info = build_index(files, BuildSettings())
    assert info["type"].startswith("IVF") and set(info["recall_at_10_by_query"]) == {"image", "text"}
    assert min(info["recall_at_10_by_query"].values()) >= 0.9 and info["recall_at_10"] >= 0.95
    for modality, fresh in (("image", images[24_000:]), ("text", captions[24_000:])):
        assert abs(fresh_recall(files, fresh) - info["recall_at_10_by_query"][modality]) <= 0.03


def test_an_index_that_cannot_meet_the_target_says_so(tmp_path):
    store = synthetic_dataset(tmp_path / "ds", image_shards(clustered(25_000, 32, 10, seed=7), 25_000))
    space = synthetic_space_file(tmp_path)
    result = runner.invoke(app, ["index", str(tmp_path / "ds"), "--model", space, "--index-type", "IVF16,PQ1"])
    assert result.exit_code == 0, result.output
    info = IndexFiles(store, "image").info()
    assert not info["target_met"] and info["recall_at_10"] < 0.95 and info["rerank"] >= 1
    assert f"Warning: the image index reaches recall@10 {info['recall_at_10']:.3f}" in result.output
    assert f"re-rank {info['rerank']}x" in result.output


def test_index_options_that_cannot_work_are_refused_before_anything_is_written(tmp_path):
    synthetic_dataset(tmp_path / "ds", image_shards(clustered(500, 16, 5, seed=9), 500))
    space = synthetic_space_file(tmp_path)
    for options, says in ((["--index-type", "IVF64,PQ7"], "FAISS cannot build it for 16-d vectors"),
                          (["--target-recall", "95"], "--target-recall"),
                          (["--max-memory", "lots"], "give bytes such as 4GB")):
        result = runner.invoke(app, ["index", str(tmp_path / "ds"), "--model", space, *options])
        assert result.exit_code == 2 and says in result.output, result.output
    assert not (tmp_path / "ds" / "indexes").exists()


def test_a_single_vector_is_indexed_and_found(tmp_path):
    vector = np.ones(8, np.float32)
    store = synthetic_dataset(tmp_path / "ds", [[("only", None, {"image": vector})]])
    files = IndexFiles(store, "image")
    assert build_index(files, BuildSettings())["recall_at_10"] == 1.0
    index, keys, _ = files.load()
    assert keys[index.search(-vector[None, :], 1)[1][0, 0]] == "only"


def test_update_adds_new_shards_and_the_check_says_when_to_run_it(tmp_path):
    vectors = clustered(30_000, 32, 100, seed=1)
    store = synthetic_dataset(tmp_path / "ds", image_shards(vectors[:24_000], 8_000))
    files = IndexFiles(store, "image")
    first = build_index(files, BuildSettings())
    add_shard(store, 3, image_shards(vectors[24_000:], 6_000, prefix="new")[0])
    with pytest.raises(IndexStale, match="--update"):
        files.check()
    updated = build_index(files, BuildSettings(), update=True)
    assert updated["type"] == first["type"] and updated["vectors"] == 30_000
    files.check()
    index, keys, _ = files.load()
    _, found = index.search(vectors[24_000:24_010], 1)
    assert [keys[i] for i in found[:, 0]] == [f"new{i:07d}" for i in range(10)]


def test_an_index_that_disagrees_with_the_embeddings_is_refused_with_the_fix(tmp_path):
    store = synthetic_dataset(tmp_path / "ds", image_shards(clustered(3_000, 16, 10, seed=2), 1_000))
    build_index(IndexFiles(store, "image"), BuildSettings())
    (tmp_path / "ds" / "embeddings" / "synthetic" / "000001.parquet").unlink()
    (tmp_path / "ds" / "embeddings" / "synthetic" / "image" / "000001.npy").unlink()
    with pytest.raises(IndexStale, match=r"gone or changed.*mmindex index .* --model synthetic`"):
        IndexFiles(store, "image").check()


def test_re_ranking_refuses_vectors_that_are_not_the_ones_indexed(tmp_path):
    shards = image_shards(clustered(3_000, 16, 10, seed=10), 1_500)
    store = synthetic_dataset(tmp_path / "ds", shards)
    files = IndexFiles(store, "image")
    assert build_index(files, BuildSettings(index_type="IVF16,PQ4"))["rerank"] >= 1
    add_shard(store, 1, shards[1][:-1])  # embedded again with one item fewer: whole, but not what was indexed
    with pytest.raises(IndexStale, match="holds 1,499 vectors but the index has 1,500 of shard 000001"):
        files.load()


def test_the_full_check_catches_ids_that_map_to_other_samples(tmp_path):
    vectors = clustered(2_000, 16, 10, seed=3)
    store = synthetic_dataset(tmp_path / "ds", image_shards(vectors, 1_000))
    build_index(IndexFiles(store, "image"), BuildSettings())
    assert runner.invoke(app, ["index", str(tmp_path / "ds"), "--model", "offline", "--check"]).exit_code == 2
    IndexFiles(store, "image").check(keys=True)
    swapped = image_shards(vectors, 1_000)[1]
    swapped[0], swapped[1] = swapped[1], swapped[0]  # same counts, two samples' vectors trade places
    add_shard(store, 1, swapped)
    IndexFiles(store, "image").check()  # counts agree...
    with pytest.raises(IndexStale, match="map to other samples"):
        IndexFiles(store, "image").check(keys=True)  # ...ids do not


def test_the_full_check_catches_ids_without_a_sample_and_samples_without_an_item(tmp_path):
    from mmindex import storage
    from mmindex.dataset.parquet import parquet_bytes, read_parquet
    from mmindex.dataset.samples import SAMPLES_SCHEMA

    store = synthetic_dataset(tmp_path / "ds", image_shards(clustered(2_000, 16, 10, seed=8), 1_000))
    space = synthetic_space_file(tmp_path)
    assert runner.invoke(app, ["index", str(tmp_path / "ds"), "--model", space]).exit_code == 0
    samples_path = store.dataset.samples_path(1)
    original = read_parquet(samples_path).to_pylist()

    def check_with_samples(rows):
        storage.write_atomic(samples_path, parquet_bytes(rows, SAMPLES_SCHEMA))
        return runner.invoke(app, ["index", str(tmp_path / "ds"), "--model", space, "--check"])

    assert check_with_samples(original).exit_code == 0
    lost = check_with_samples(original[1:])  # a sample the index still finds is gone from the dataset
    assert lost.exit_code == 2 and "ids of shard 000001 in the image index that map to no sample" in lost.output
    extra = {**original[0], "key": "never-embedded", "sha256": "never-embedded"}
    unembedded = check_with_samples([*original, extra])  # a sample with an image that was never embedded
    assert unembedded.exit_code == 2 and "with image missing from its embeddings" in unembedded.output


def test_samples_of_shards_not_embedded_yet_are_reported_by_check_index_and_search(indexed, tmp_path):
    dataset = copy_dataset(indexed, tmp_path)
    (dataset / "embeddings" / "offline" / "000005.parquet").unlink()
    (dataset / "embeddings" / "offline" / "text" / "000005.npy").unlink()
    rebuilt = runner.invoke(app, ["index", str(dataset)])
    assert rebuilt.exit_code == 0 and "not embedded in space 'offline' yet (000005)" in rebuilt.output
    check = runner.invoke(app, ["index", str(dataset), "--check"])
    assert check.exit_code == 2 and f"mmindex embed {dataset} --model offline" in check.output
    found = search(dataset, "a photo of a cat", "-k", "1")
    assert found.exit_code == 0 and "chelsea_cat.jpg" in found.output and "no index can find" in found.output


def test_update_with_nothing_new_leaves_the_index_alone(indexed, tmp_path):
    dataset = copy_dataset(indexed, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in (dataset / "indexes").rglob("*") if p.is_file()}
    result = runner.invoke(app, ["index", str(dataset), "--update"])
    assert result.exit_code == 0 and result.output.count("up to date") == 3
    assert {p: p.stat().st_mtime_ns for p in (dataset / "indexes").rglob("*") if p.is_file()} == before


def test_eval_on_a_hand_made_case_with_known_answers(tmp_path):
    e = np.eye(4, dtype=np.float32)
    # a and b share a caption; c's image is closest to a's caption; d has only text
    samples = [("a", "two dogs", {"text": e[0], "image": e[1]}),
               ("b", "two dogs", {"text": e[1], "image": e[0]}),
               ("c", "a red car", {"text": e[2], "image": e[0] + 0.9 * e[2]}),
               ("d", "a tree", {"text": e[3]})]
    store = synthetic_dataset(tmp_path / "ds", [samples])
    rows = {(r["query"], r["target"]): r for r in evaluate(store, with_index=False)}
    assert set(rows) == {("caption", "image"), ("image", "caption")}
    to_image = rows["caption", "image"]["exact"]
    # a's caption: images b (rank 1, correct: same caption); b's caption: a (rank 1); c's caption: c (rank 1)
    assert to_image == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0, "median_rank": 1.0, "queries": 3}
    to_caption = rows["image", "caption"]["exact"]
    # image a -> text b (correct); image b -> text a (correct); image c -> text a first (wrong), text c second
    assert to_caption["recall@1"] == pytest.approx(2 / 3, abs=1e-4) and to_caption["median_rank"] == 1.0


@pytest.fixture(scope="module")
def indexed(offline_embedded, tmp_path_factory) -> Path:
    dataset = copy_dataset(offline_embedded, tmp_path_factory.mktemp("indexed"))
    result = runner.invoke(app, ["index", str(dataset)])
    assert result.exit_code == 0, result.output
    return dataset


def search(dataset: Path, *args: str):
    return runner.invoke(app, ["search", *args, "--dataset", str(dataset)])


def test_search_finds_the_cat_photo_first_and_speaks_json(indexed):
    result = search(indexed, "a photo of a cat", "--json", "-k", "3")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert hits[0]["modality"] == "image" and hits[0]["source"].endswith("chelsea_cat.jpg")
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    table = search(indexed, "a photo of a cat", "--modality", "audio", "-k", "2")
    assert table.exit_code == 0 and "rank" in table.output
    assert all(" audio " in line for line in table.output.splitlines()[1:])


def test_query_parts_fuse_and_a_batch_writes_jsonl(indexed, tmp_path):
    from mmindex.demo import CORPUS

    cat = str(CORPUS / "photos" / "chelsea_cat.jpg")
    fused = search(indexed, "the conference is locked", "--image", cat, "--weight", "image=0.05", "--json")
    assert fused.exit_code == 0, fused.output
    assert "conference" in json.loads(fused.output)[0]["caption"].lower()  # the text part dominates
    queries = tmp_path / "queries.txt"
    queries.write_text("a photo of a cat\n\n" + json.dumps({"image": cat}) + "\n")
    batch = search(indexed, "--queries", str(queries), "-k", "1")
    assert batch.exit_code == 0, batch.output
    lines = [json.loads(line) for line in batch.output.splitlines()]
    assert len(lines) == 2 and all(line["results"][0]["source"].endswith("chelsea_cat.jpg") for line in lines)


def test_a_batch_goes_on_past_a_query_that_fails_and_says_which(indexed, tmp_path):
    from mmindex.demo import CORPUS

    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join([json.dumps({"image": str(tmp_path / "gone.jpg")}),
                                  json.dumps({"image": str(CORPUS / "photos" / "chelsea_cat.jpg")})]))
    batch = search(indexed, "--queries", str(queries), "-k", "1")
    assert batch.exit_code == 1
    first, second = (json.loads(line) for line in batch.stdout.splitlines())
    assert "no such file" in first["error"] and "results" not in first
    assert second["results"][0]["source"].endswith("chelsea_cat.jpg")
    assert "1 of 2 queries failed" in batch.stderr


@pytest.mark.parametrize(("line", "says"), [
    ('{"text": 5}', "queries.jsonl:2: text must be a string"),
    ('{"text": "a cat", "weights": {"imgae": 0.5}}', "queries.jsonl:2: weight for 'imgae'"),
    ('{"text": "a cat", "weights": [0.5]}', "queries.jsonl:2: weights must map"),
    ('{"text": "a cat", "mode": 1}', "queries.jsonl:2: unknown field(s) ['mode']"),
    ('{"text": "a cat"', "queries.jsonl:2: Expecting"),
])
def test_a_malformed_query_file_is_refused_naming_the_line(indexed, tmp_path, line, says):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(f"a photo of a cat\n{line}\n")
    result = search(indexed, "--queries", str(queries))
    assert result.exit_code == 2 and says in result.output and "results" not in result.output


def test_search_errors_are_clear(indexed, offline_embedded, tmp_path):
    assert search(indexed, "  ").exit_code == 2
    assert "empty query" in search(indexed).output
    missing = search(indexed, "--image", str(tmp_path / "nope.jpg"))
    assert missing.exit_code == 2 and "no such file" in missing.output
    folder = search(indexed, "--image", str(tmp_path))
    assert folder.exit_code == 2 and "a folder, not a file" in folder.output
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for nowhere, what in ((tmp_path / "none", "no such folder"), (a_file, "it is a file")):
        lost = search(nowhere, "a cat")
        assert lost.exit_code == 2 and f"no dataset at {nowhere}: {what}" in lost.output
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    assert "unreadable image" in search(indexed, "--image", str(junk)).output
    not_built = search(offline_embedded, "a cat")
    assert not_built.exit_code == 2 and "mmindex index" in not_built.output
    assert "--modality" in search(indexed, "cat", "--modality", "video").output
    misspelt = search(indexed, "cat", "--image", str(junk), "--weight", "imgae=0.5")
    assert misspelt.exit_code == 2 and "the modality is text, image or" in misspelt.output
    assert "Invalid value for '--queries'" in search(indexed, "--queries", str(tmp_path / "none.txt")).output


def test_eval_reports_exact_and_index_figures(indexed):
    result = runner.invoke(app, ["eval", str(indexed), "--json"])
    assert result.exit_code == 0, result.output
    rows = {(r["query"], r["target"]): r for r in json.loads(result.output)}
    assert rows["caption", "audio"]["exact"]["recall@1"] == 1.0  # every clip nearest its own transcript
    assert rows["caption", "image"]["index"] == rows["caption", "image"]["exact"]  # exact index at this size
    check = runner.invoke(app, ["index", str(indexed), "--check"])
    assert check.exit_code == 0 and check.output.count(" ok: ") == 3


def test_an_index_built_before_new_shards_were_embedded_is_caught_by_search(indexed, tmp_path):
    dataset = copy_dataset(indexed, tmp_path)
    shutil.rmtree(dataset / "indexes" / "offline" / "text")
    (dataset / "embeddings" / "offline" / "000005.parquet").unlink()
    result = search(dataset, "a cat", "--modality", "image")
    assert result.exit_code == 2 and "does not match the embeddings" in result.output


def test_eval_of_a_dataset_not_embedded_says_what_to_run(demo_dataset):
    result = runner.invoke(app, ["eval", str(demo_dataset)])
    assert result.exit_code == 2 and "nothing to evaluate" in result.output
    assert f"mmindex embed {demo_dataset} --model offline" in result.output and "No pairs" not in result.output


@pytest.mark.parametrize("block", [7, 64, 8_192])
def test_the_ground_truth_of_tuning_is_every_querys_exact_nearest(block, monkeypatch):
    """Tuning's exact nearest, taken a block of vectors at a time (blocks of fewer vectors than k included, and a
    last short shard), are those of one exact search over all of them, best first."""
    from mmindex.index import tune
    from mmindex.index.vectors import ShardVectors

    monkeypatch.setattr(tune, "EXACT_BLOCK", block)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((1_003, 16)).astype(np.float16)
    queries = rng.standard_normal((40, 16)).astype(np.float32)
    shards = [ShardVectors(0, None, vectors[:500]), ShardVectors(1, None, vectors[500:1_000]),
              ShardVectors(2, None, vectors[1_000:])]
    expected = np.argsort(-(queries @ vectors.astype(np.float32).T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(exact_neighbours(shards, queries), expected)


def test_an_index_gets_each_modalitys_embedded_keys_in_vector_order():
    """A shard's embeddings table lists items in tar order, of every modality, skipped ones without a row: the keys
    of one modality come back in the order of its vectors."""
    import pyarrow as pa

    from mmindex.dataset.embeddings import embedded_keys

    table = pa.table({"key": ["a", "b", "c", "d", "e", "f"],
                      "modality": ["image", "text", "image", "image", "text", "image"],
                      "row": pa.array([2, 0, None, 0, 1, 1], pa.int64())})
    assert embedded_keys(table, "image") == ["d", "f", "a"]
    assert embedded_keys(table, "text") == ["b", "e"] and embedded_keys(table, "audio") == []
