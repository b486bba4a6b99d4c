"""`mmindex embed` end to end against the raw model forward on already-decoded batches, same run.

    python benchmarks/embed_bench.py [--images 512] [--model offline] [--device cpu | --gpus N]
                                     [--batch-size 64] [--decode-workers N ...] [--workdir DIR]
    python benchmarks/embed_bench.py --random-clip-vit-b32 --gpus 1 --images 20000 --batch-size 256

--random-clip-vit-b32 embeds with CLIP ViT-B/32's architecture and random weights (the real ones cannot be
downloaded here): the same forward cost, meaningless vectors.

Builds a dataset of real media: --images JPEG crops (256-512 px) of the scikit-image photos with captions,
the demo corpus's recorded speech clips (with transcripts) and texts. Then, per modality of the space:

    prepare   up to 4,096 items decoded and prepared in this one process (a decode process's rate)
    encode    the encoder alone over those prepared items in batches of --batch-size on --device (or cuda:0
              with --gpus): from inputs in memory to vectors back, repeated for at least 5 seconds
    model     for images, the model's image tower alone on one batch already on the device (the raw forward)
    embed     `mmindex embed` on the same dataset (one worker, or one per GPU with --gpus), once per
              --decode-workers value: reading shards, decoding in the decode processes, encoding and
              committing; samples/s from its recorded per-modality worker time

A ratio embed / model near 1.0 means decoding, transfers and I/O are hidden behind the model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import real_data
from mmindex.dataset import Dataset
from mmindex.demo import CORPUS
from mmindex.embed.run import EmbedSettings, embed
from mmindex.embed.shard import Chunk, prepare_chunk, shard_items
from mmindex.embed.steps import decode_processes, devices
from mmindex.encoders.base import inference
from mmindex.executors.local import LocalExecutor
from mmindex.ingest.run import IngestSettings, ingest
from mmindex.spaces import resolve_space


def build_corpus(root: Path, images: int) -> None:
    (root / "photos").mkdir(parents=True)
    blocks = [range(start, min(images, start + 256)) for start in range(0, images, 256)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_save_crops, [root / "photos"] * len(blocks), blocks))
    for folder in ("speech", "texts"):
        shutil.copytree(CORPUS / folder, root / folder)


def _save_crops(folder: Path, numbers: range) -> None:
    """JPEG crops (256-512 px) of the scikit-image photos with captions; crop ``i`` is the same in any process."""
    photos = [(name, array) for name, array, _ in real_data.skimage_photos() if array.ndim == 3]
    for i in numbers:
        rng = np.random.default_rng(i)
        name, array = photos[i % len(photos)]
        image = Image.fromarray(array[..., :3])
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        side = int(rng.integers(256, 513))
        crop = image.crop((x, y, x + cw, y + ch))
        crop = crop.resize((side, max(1, round(side * ch / cw))), Image.Resampling.BICUBIC)
        crop.save(folder / f"{name}_{i:05d}.jpg", quality=90)
        (folder / f"{name}_{i:05d}.txt").write_text(f"a photo: {name.replace('_', ' ')} {i}")


def raw_rate(encoder, path: str, modality: str, batch_size: int) -> tuple[float, float, float | None]:
    """(prepare items/s in this one process, encode items/s, model-only items/s): up to 4,096 items prepared
    beforehand, then the encoder's batches alone over them (from prepared inputs in memory to vectors back),
    repeated for at least 5 seconds; for images also the model's forward alone, its input already on the device."""
    items = [i for i in shard_items(path) if i.modality == modality][:4096]
    started = time.perf_counter()
    prepared = [x for x in prepare_chunk(Chunk(path, modality, items), {modality: encoder.preparer()})
                if not isinstance(x, Exception)]
    prepare_rate = len(items) / (time.perf_counter() - started)
    batches = [prepared[start:start + batch_size] for start in range(0, len(prepared), batch_size)]
    encoder.encode(batches[0])  # warm-up
    _synchronize(encoder)
    done, started = 0, time.perf_counter()
    while not done or time.perf_counter() - started < 5.0:
        for batch in batches:
            encoder.encode(batch)
            done += len(batch)
        encode_rate = done / (time.perf_counter() - started)
    return prepare_rate, encode_rate, model_rate(encoder, batches[0]) if modality == "image" else None


def model_rate(encoder, batch: list) -> float | None:
    """Images/s of the model's image tower alone on a batch already on the device (a Hugging Face encoder)."""
    if not hasattr(encoder, "pixels"):
        return None
    pixels = encoder.pixels(batch)
    done, started = 0, time.perf_counter()
    with inference(encoder.device):
        while not done or time.perf_counter() - started < 5.0:
            encoder.model.get_image_features(pixel_values=pixels)
            done += len(batch)
            if done % (20 * len(batch)) == 0:
                _synchronize(encoder)
        _synchronize(encoder)
    return done / (time.perf_counter() - started)


def _synchronize(encoder) -> None:
    if encoder.device.type == "cuda":
        torch.cuda.synchronize(encoder.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="offline")
    parser.add_argument("--random-clip-vit-b32", action="store_true", help="CLIP ViT-B/32 shapes, random weights")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpus", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-workers", type=int, nargs="+", default=[None])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmindex-embed-bench-"))
    corpus, dataset = workdir / "corpus", workdir / "dataset"
    started = time.perf_counter()
    if not corpus.exists():
        build_corpus(corpus, args.images)
    if not dataset.exists():
        ingest(IngestSettings((str(corpus),), str(dataset), shard_size="100000", workers=os.cpu_count() or 1))
    print(f"corpus and dataset ready in {time.perf_counter() - started:.1f} s")
    model = args.model
    if args.random_clip_vit_b32:
        from tiny_models import save_random_clip_vit_b32

        model = str(save_random_clip_vit_b32(workdir / "clip-vit-b32-random"))
    space = resolve_space(model)
    device = "cuda:0" if args.gpus else args.device
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {name}, batch {args.batch_size}, "
          f"space {space.name}")

    encoders = space.load(device)
    path = Dataset(str(dataset)).shard_path(0)
    raw = {m: raw_rate(encoders[m], path, m, args.batch_size) for m in sorted(encoders)}
    del encoders
    print("\n| modality | decode workers | items | prepare items/s (1 process) | model alone items/s "
          "| encode items/s | `mmindex embed` items/s | embed / encode | embed / model |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for decode_workers in args.decode_workers:
        shutil.rmtree(dataset / "embeddings", ignore_errors=True)
        settings = EmbedSettings(str(dataset), model, gpus=args.gpus, device=args.device,
                                 batch_size=args.batch_size, decode_workers=decode_workers)
        workers = devices(settings.gpus, settings.device, settings.workers)
        report = embed(settings, LocalExecutor(devices=workers))
        chosen = decode_processes(decode_workers, workers[0], len(workers))
        for modality, embedded in sorted(report.embedded.items()):
            prepare_rate, encode_rate, alone = raw[modality]
            rate = report.rate(modality) or 0.0
            print(f"| {modality} | {chosen} | {embedded:,} | {prepare_rate:,.0f} | "
                  + (f"{alone:,.0f}" if alone else "-") + f" | {encode_rate:,.0f} | {rate:,.0f} | "
                  f"{rate / encode_rate:.2f} | " + (f"{rate / alone:.2f}" if alone else "-") + " |")
        print(f"whole run: {report.wall_seconds:.1f} s wall (including loading the models); skipped "
              + json.dumps({f"{m}: {r}": n for (m, r), n in report.skipped.items()}))


if __name__ == "__main__":
    main()
