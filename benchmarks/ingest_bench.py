"""Ingest throughput against a near-floor baseline measured in the same run.

    python benchmarks/ingest_bench.py [--samples 20000] [--workdir DIR] [--workers 1 2]

Builds once (cached in --workdir) a folder tree of at least --samples real-media samples: crops of the
scikit-image photos as JPEGs with captions, recorded speech clips with transcripts (WAV, and the same clips
as FLAC), CC0 animal sounds, and WordNet glosses as text samples. Then, on a warm page cache, it times:

    baseline  one process groups files by stem, reads them and writes 10,000-sample tars with tarfile
              (no validation: a near floor for the I/O and tar work)
    checks    mmindex's validation alone in one process (decode every image and clip, hash, parse text),
              without Beam and without writing: the share of the time that checking costs
    mmindex   `mmindex ingest` (the in-process executor: full decode of every image and clip, dedup, parquet,
              atomic commits) with 1 and 2 worker processes
    beam      the same job on the Beam executor, Beam's in-process runner

in --rounds interleaved rounds, and prints each run's median: samples/s, MB/s and its ratio to the
baseline's throughput.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import real_data
from mmindex.ingest.discover import ManifestColumns, discover
from mmindex.ingest.run import IngestSettings, ingest
from mmindex.ingest.validate import inspect_candidate
from mmindex.media import Limits, Rejected


def build_corpus(root: Path, samples: int, workdir: Path) -> None:
    """Writes the benchmark corpus under ``root`` (a folder tree, one stem per sample)."""
    rng = np.random.default_rng(0)
    speech = real_data.speech_clips(workdir)
    (root / "speech").mkdir(parents=True)
    for wav, transcript in speech:
        for ext in ("wav", "flac"):
            stem = root / "speech" / f"{Path(wav).stem}_{ext}"
            if ext == "wav":
                shutil.copy(wav, f"{stem}.wav")
            else:
                audio, rate = soundfile.read(wav)
                soundfile.write(f"{stem}.flac", audio, rate)
            Path(f"{stem}.txt").write_text(transcript)
    (root / "sounds").mkdir()
    for path, caption in real_data.animal_sounds(workdir):
        shutil.copy(path, root / "sounds" / Path(path).name)
        (root / "sounds" / Path(path).with_suffix(".txt").name).write_text(caption)
    texts = real_data.wordnet_glosses(workdir, limit=samples // 2)
    (root / "texts").mkdir()
    for i, (lemma, text) in enumerate(texts):
        (root / "texts" / f"{i:06d}.txt").write_text(f"{lemma}: {text}")
    photos = real_data.skimage_photos()
    n_images = max(0, samples - len(speech) * 2 - len(texts)) + 50
    (root / "photos").mkdir()
    for i in range(n_images):
        name, image, description = photos[i % len(photos)]
        image = Image.fromarray(np.asarray(image)).convert("RGB")
        side = int(rng.integers(min(image.size) // 3, min(image.size) + 1))
        x, y = (int(rng.integers(0, d - side + 1)) for d in image.size)
        out = int(rng.integers(256, 513))
        crop = image.crop((x, y, x + side, y + side)).resize((out, out), Image.Resampling.BICUBIC)
        crop.save(root / "photos" / f"{name}_{i:06d}.jpg", quality=90)
        (root / "photos" / f"{name}_{i:06d}.txt").write_text(f"a detail of {description}")


def warm_read(root: Path) -> tuple[int, int]:
    """Reads every file once so that all timed runs see a warm page cache; returns (files, bytes)."""
    files = nbytes = 0
    for path in root.rglob("*"):
        if path.is_file():
            files += 1
            nbytes += len(path.read_bytes())
    return files, nbytes


def baseline(root: Path, out: Path, shard_samples: int = 10_000) -> int:
    """Reads the same files and writes plain tars in one process; returns the samples written."""
    groups: dict[str, list[str]] = defaultdict(list)
    for folder, _, names in os.walk(root):
        for name in names:
            stem, _, ext = name.rpartition(".")
            groups[os.path.join(folder, stem)].append(ext)
    out.mkdir(parents=True)
    stems = sorted(groups.items())
    for first in range(0, len(stems), shard_samples):
        with tarfile.open(out / f"{first // shard_samples:06d}.tar", "w") as tar:
            for i, (stem, exts) in enumerate(stems[first: first + shard_samples], start=first):
                for ext in exts:
                    data = Path(f"{stem}.{ext}").read_bytes()
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return len(groups)


def checks_only(root: Path) -> int:
    """The validation mmindex does (decode every image and clip, hash, parse), alone: no Beam, no writes."""
    passed = 0
    for candidate in discover(str(root), ManifestColumns(), Limits(), scratch=tempfile.mkdtemp()):
        try:
            inspect_candidate(candidate, Limits())
            passed += 1
        except Rejected:
            pass
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mmindex-bench")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--beam-workers", type=int, nargs="*", default=[1],
                        help="also time the Beam executor on Beam's in-process runner")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; medians are reported")
    args = parser.parse_args()

    root = args.workdir / f"corpus-{args.samples}"
    if not (args.workdir / f"corpus-{args.samples}.done").exists():
        shutil.rmtree(root, ignore_errors=True)
        print(f"building the corpus in {root} (once) ...", flush=True)
        build_corpus(root, args.samples, args.workdir)
        (args.workdir / f"corpus-{args.samples}.done").touch()
    files, nbytes = warm_read(root)
    print(f"corpus: {files:,} files, {nbytes / 1e6:,.1f} MB; machine: {os.cpu_count()} cores")

    runs = ["baseline", "checks only", *(f"mmindex --workers {w}" for w in args.workers),
            *(f"beam --workers {w}" for w in args.beam_workers)]
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    counts: dict[str, int] = {}
    scratch = Path(tempfile.mkdtemp(prefix="mmindex-bench-"))
    try:
        for round_number in range(args.rounds):  # interleaved, so that a noisy minute hits every run alike
            for name in runs:
                out = scratch / name.replace(" ", "_")
                started = time.perf_counter()
                counts[name] = run_once(name, root, out)
                seconds[name].append(time.perf_counter() - started)
                shutil.rmtree(out, ignore_errors=True)
            print(f"round {round_number + 1}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()),
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    median = {name: float(np.median(times)) for name, times in seconds.items()}
    floor = counts["baseline"] / median["baseline"]
    print(f"\nmedians of {args.rounds} rounds")
    print(f"{'run':<22}{'samples':>9}{'seconds':>10}{'samples/s':>12}{'MB/s':>9}{'vs baseline':>13}")
    for name in runs:
        rate = counts[name] / median[name]
        print(f"{name:<22}{counts[name]:>9,}{median[name]:>10.2f}{rate:>12,.0f}{nbytes / median[name] / 1e6:>9.1f}"
              f"{rate / floor:>12.2f}x")


def run_once(name: str, root: Path, out: Path) -> int:
    """One timed run; returns the samples it wrote (or checked)."""
    if name == "baseline":
        return baseline(root, out)
    if name == "checks only":
        return checks_only(root)
    settings = IngestSettings((str(root),), str(out), workers=int(name.split()[-1]))
    if name.startswith("beam"):
        # Imported here, not at the top: worker processes import this script again, and need no Beam.
        from pipelines.executor import BeamExecutor
        return ingest(settings, BeamExecutor([], settings.workers)).counts.ingested
    return ingest(settings).counts.ingested


if __name__ == "__main__":
    main()
