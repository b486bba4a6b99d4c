"""Near-duplicate detection: pair precision and recall on real media with generated copies, and the pair search's
throughput on synthetic vectors against exact all-pairs search.

Quality. Each scikit-image photo gets near-copies of every kind the issue names, with seeded random parameters:
resized 0.3-2x, JPEG quality 20-95, cropped by up to 10% of each side in all, PNG of a JPEG, a small text overlay,
grayscale. Distinct but similar images are other crops of the same photo (half its width and height, at three
places). Each CC0 animal sound gets copies as WAV, MP3 and FLAC, at another gain and trimmed by 0.2 s; the demo
corpus's speech clips are distinct clips. Pairs are scored at the default thresholds (mmindex.dedup.run).

Throughput and memory. ``--vectors`` synthetic unit vectors (256-d, clustered, with planted copies at cosine ~0.95),
stored as `mmindex dedup` stores descriptors (float16 files per shard, memory-mapped); all pairs at 0.9 found as it
finds them (mmindex.dedup.pairs, under ``--max-memory``), with the peak RSS of that search, against exact all-pairs
search (a Flat index) timed on a sample of queries; recall of the planted pairs is checked against the exact
answer.

    python benchmarks/dedup_bench.py [--vectors 1000000] [--max-memory 4GB] [--skip-quality] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import io
import itertools
import time
from pathlib import Path

import faiss
import numpy as np
import soundfile
from PIL import Image, ImageDraw, ImageOps

from mmindex.dedup.descriptors import describe_audio, describe_image
from mmindex.dedup.pairs import Items, components, near_pairs
from mmindex.dedup.run import THRESHOLDS
from mmindex.demo import CORPUS
from mmindex.sizes import parse_size
from real_data import animal_sounds, skimage_photos


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def image_corpus(rng: np.random.Generator) -> tuple[list[bytes], list[int]]:
    """(file bytes, true group) of every photo, its copies (one group) and its other crops (a group each)."""
    data, truth, group = [], [], 0
    for _, pixels, _ in skimage_photos():
        photo = Image.fromarray(pixels).convert("RGB")
        w, h = photo.size
        scale = rng.uniform(0.3, 2.0)
        cut = rng.uniform(0, 0.1, 2)
        left, top = rng.uniform(0, cut[0]), rng.uniform(0, cut[1])
        marked = photo.copy()
        ImageDraw.Draw(marked).text((int(0.05 * w), int(0.9 * h)), "(c) example.com", fill=(255, 255, 255))
        copies = [encoded(photo, "PNG"),
                  encoded(photo.resize((max(8, int(w * scale)), max(8, int(h * scale))), Image.BICUBIC), "JPEG",
                          quality=85),
                  encoded(photo, "JPEG", quality=int(rng.integers(20, 96))),
                  encoded(photo.crop((int(left * w), int(top * h), int((1 - cut[0] + left) * w),
                                      int((1 - cut[1] + top) * h))), "JPEG", quality=90),
                  encoded(Image.open(io.BytesIO(encoded(photo, "JPEG", quality=75))), "PNG"),
                  encoded(marked, "JPEG", quality=90),
                  encoded(ImageOps.grayscale(photo), "JPEG", quality=90)]
        data += copies
        truth += [group] * len(copies)
        for x, y in ((0, 0), (0.5, 0), (0.25, 0.5)):
            group += 1
            data.append(encoded(photo.crop((int(x * w), int(y * h), int((x + 0.5) * w), int((y + 0.5) * h))), "PNG"))
            truth.append(group)
        group += 1
    return data, truth


def audio_corpus(workdir: Path) -> tuple[list[bytes], list[int]]:
    data, truth = [], []
    for group, (path, _) in enumerate(animal_sounds(workdir)):
        clip, rate = soundfile.read(path, always_2d=True)
        for fmt, samples in (("WAV", clip), ("MP3", clip), ("FLAC", clip), ("FLAC", clip * 0.3),
                             ("WAV", clip[int(0.2 * rate):])):
            out = io.BytesIO()
            soundfile.write(out, samples, rate, format=fmt)
            data.append(out.getvalue())
            truth.append(group)
    for group, path in enumerate(sorted((CORPUS / "speech").glob("*.wav")), start=len(truth)):
        data.append(path.read_bytes())
        truth.append(group)
    return data, truth


def pair_scores(views: list[np.ndarray], truth: list[int], threshold: float) -> tuple[float, float, int]:
    """Pair precision and recall of the groups found (pairs within one group) against the true groups."""
    found = near_pairs(Items([]), Items([np.stack(views)]), threshold)
    predicted = {pair for members in components(len(views), [(i, j) for i, j, _ in found])
                 for pair in itertools.combinations(members, 2)}
    actual = {(i, j) for i, j in itertools.combinations(range(len(truth)), 2) if truth[i] == truth[j]}
    hit = len(predicted & actual)
    return hit / max(1, len(predicted)), hit / max(1, len(actual)), len(actual)


def quality(workdir: Path) -> None:
    for modality, (data, truth), describe in (("image", image_corpus(np.random.default_rng(0)), describe_image),
                                              ("audio", audio_corpus(workdir), describe_audio)):
        started = time.perf_counter()
        views = [describe(item).views for item in data]
        seconds = time.perf_counter() - started
        precision, recall, pairs = pair_scores(views, truth, THRESHOLDS[modality])
        print(f"{modality}: {len(data)} items, {pairs} true pairs, threshold {THRESHOLDS[modality]}: "
              f"pair precision {precision:.3f}, recall {recall:.3f}; described at {len(data) / seconds:.1f} items/s")


def synthetic(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Clustered unit vectors, the last 2% planted copies of others (cosine ~0.95)."""
    centres = rng.standard_normal((max(16, n // 1000), dim)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.9 * rng.standard_normal((n, dim)).astype(np.float32)
    planted = n // 50
    originals = rng.integers(0, n - planted, planted)
    vectors[n - planted:] = vectors[originals] + 0.15 * rng.standard_normal((planted, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def synthetic_shards(n: int, folder: Path, shards: int = 10) -> list[np.ndarray]:
    """``synthetic`` vectors stored as `mmindex dedup` stores descriptors: float16 (items, 1 view, 256) files,
    one per shard, memory-mapped back."""
    vectors = synthetic(n, 256, np.random.default_rng(0))
    paths = []
    for number, part in enumerate(np.array_split(vectors, shards)):
        paths.append(folder / f"{number:06d}.npy")
        np.save(paths[-1], part[:, None, :].astype(np.float16))
    return [np.load(path, mmap_mode="r") for path in paths]


def peak_rss(reset: bool = False) -> int:
    """The process's peak resident memory in bytes since the last reset (Linux: VmHWM, reset by clear_refs)."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


def throughput(n: int, workdir: Path, max_memory: int, sample: int = 2_000, threshold: float = 0.9) -> None:
    parts = synthetic_shards(n, workdir)
    started, baseline = time.perf_counter(), peak_rss(reset=True)
    found = near_pairs(Items([]), Items(parts), threshold, max_memory)
    seconds, peak = time.perf_counter() - started, peak_rss()
    vectors = Items(parts).rows(0, n)
    exact = faiss.IndexFlatIP(256)
    exact.add(vectors)
    queries = np.random.default_rng(1).choice(n, min(sample, n), replace=False)
    started = time.perf_counter()
    limits, _, ids = exact.range_search(vectors[queries], threshold)
    exact_seconds = (time.perf_counter() - started) * n / len(queries)
    truth = {(min(int(q), int(t)), max(int(q), int(t))) for row, q in enumerate(queries)
             for t in ids[limits[row]:limits[row + 1]] if t != q}
    got = {(i, j) for i, j, _ in found}
    recall = len(truth & got) / max(1, len(truth))
    print(f"pairs of {n:,} vectors (256-d, float16 files memory-mapped) at cosine {threshold}, "
          f"{faiss.omp_get_max_threads()} threads, --max-memory {max_memory / 2**20:,.0f} MiB: {len(found):,} pairs "
          f"in {seconds:.1f} s = {n / seconds:,.0f} vectors/s, peak RSS {peak / 2**20:,.0f} MiB "
          f"({baseline / 2**20:,.0f} MiB before it); exact all-pairs (Flat range search, timed on {len(queries):,} "
          f"queries) "
          f"{n / exact_seconds:,.0f} vectors/s ({exact_seconds:,.0f} s projected): {exact_seconds / seconds:.1f}x; "
          f"recall of the exact pairs {recall:.3f} ({len(truth):,} pairs of the sample)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mmindex-bench"))
    parser.add_argument("--max-memory", default="4GB", help="the pair search's budget, as `mmindex dedup` takes it")
    parser.add_argument("--skip-quality", action="store_true", help="measure the pair search only")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not args.skip_quality:
        quality(args.workdir)
    throughput(args.vectors, args.workdir, parse_size(args.max_memory))


if __name__ == "__main__":
    main()
