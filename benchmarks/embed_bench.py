"""`mmindex embed` end to end against the raw model forward on already-decoded batches, same run.

    python benchmarks/embed_bench.py [--images 512] [--model offline] [--device cpu] [--batch-size 64]
                                     [--workdir DIR]

Builds a dataset of real media: --images JPEG crops (256-512 px) of the scikit-image photos with captions,
the demo corpus's recorded speech clips (with transcripts) and texts. Then, per modality of the space:

    raw       every item is decoded and prepared first (not timed); the timer covers only the encoder's
              forward passes over batches of --batch-size on --device
    embed     `mmindex embed` on the same dataset (one worker): reading shards, decoding in the decode
              process, encoding and committing; samples/s from its recorded per-modality worker time

A ratio embed / raw near 1.0 means decoding and I/O are hidden behind the model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import real_data
from mmindex.dataset import Dataset
from mmindex.demo import CORPUS
from mmindex.embed.run import EmbedSettings, embed
from mmindex.embed.shard import Chunk, prepare_chunk, shard_items
from mmindex.ingest.run import IngestSettings, ingest
from mmindex.spaces import resolve_space


def build_corpus(root: Path, images: int) -> None:
    rng = np.random.default_rng(0)
    photos = [(name, array) for name, array, _ in real_data.skimage_photos() if array.ndim == 3]
    (root / "photos").mkdir(parents=True)
    for i in range(images):
        name, array = photos[i % len(photos)]
        image = Image.fromarray(array[..., :3])
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        side = int(rng.integers(256, 513))
        crop = image.crop((x, y, x + cw, y + ch))
        crop = crop.resize((side, max(1, round(side * ch / cw))), Image.Resampling.BICUBIC)
        crop.save(root / "photos" / f"{name}_{i:05d}.jpg", quality=90)
        (root / "photos" / f"{name}_{i:05d}.txt").write_text(f"a photo: {name.replace('_', ' ')} {i}")
    for folder in ("speech", "texts"):
        shutil.copytree(CORPUS / folder, root / folder)


def raw_rate(encoder, path: str, modality: str, batch_size: int) -> tuple[int, float]:
    """Items and seconds of the encoder's forward passes alone, inputs prepared beforehand."""
    items = [i for i in shard_items(path) if i.modality == modality]
    prepared = [x for x in prepare_chunk(Chunk(path, modality, items), {modality: encoder.preparer()})
                if not isinstance(x, Exception)]
    encoder.encode(prepared[:batch_size])  # warm-up
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(prepared), batch_size):
        encoder.encode(prepared[start:start + batch_size])
    if encoder.device.type == "cuda":
        torch.cuda.synchronize()
    return len(prepared), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="offline")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-workers", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmindex-embed-bench-"))
    corpus, dataset = workdir / "corpus", workdir / "dataset"
    if not corpus.exists():
        build_corpus(corpus, args.images)
    if not dataset.exists():
        ingest(IngestSettings((str(corpus),), str(dataset), shard_size="100000"))
    shutil.rmtree(dataset / "embeddings", ignore_errors=True)
    space = resolve_space(args.model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"batch {args.batch_size}, space {space.name}")

    report = embed(EmbedSettings(str(dataset), args.model, device=args.device, batch_size=args.batch_size,
                                 decode_workers=args.decode_workers))
    encoders = space.load(args.device)
    path = Dataset(str(dataset)).shard_path(0)
    print("\n| modality | items | raw forward items/s | `mmindex embed` items/s | embed / raw |")
    print("|---|---:|---:|---:|---:|")
    for modality, embedded in sorted(report.embedded.items()):
        items, seconds = raw_rate(encoders[modality], path, modality, args.batch_size)
        raw, rate = items / seconds, report.rate(modality) or 0.0
        print(f"| {modality} | {embedded:,} | {raw:,.1f} | {rate:,.1f} | {rate / raw:.2f} |")
    print(f"\nwhole run: {report.wall_seconds:.1f} s wall (including loading the models)")
    print(json.dumps({f"{m}: {r}": n for (m, r), n in report.skipped.items()}))


if __name__ == "__main__":
    main()
