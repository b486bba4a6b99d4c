"""`mmindex embed` end to end against the raw model forward on already-decoded batches, same run.

    python benchmarks/embed_bench.py [--images 512] [--model offline] [--device cpu | --gpus N]
                                     [--batch-size 64] [--decode-workers N ...] [--workdir DIR]
    python benchmarks/embed_bench.py --random-clip-vit-b32 --gpus 1 --images 20000 --batch-size 256 \
        --max-side 1024 --decode cpu device
    python benchmarks/embed_bench.py --decode-only      # decode rates alone, Pillow against libjpeg-turbo

--random-clip-vit-b32 embeds with CLIP ViT-B/32's architecture and random weights (the real ones cannot be
downloaded here): the same forward cost, meaningless vectors.

First, decode rates in this one process (a decode process's rate) for JPEGs of 256-2048 px: Pillow's full
decode (what embed's preparers did before libjpeg-turbo) against the new decoder (mmindex.jpeg, DCT-scaled to
what the space's resize needs), the space's whole image preparer before and after, and ingest's image check
before and after ("before": every file through Pillow, as mmindex.jpeg were not there). Then the hand-over of
one batch of --batch-size prepared 224 px images through the worker's reused shared-memory blocks (transfer.py),
both sides in this process: packing it (a decode process's share) and reading and stacking it (the worker's).

Builds a dataset of real media: --images JPEG crops (256 to --max-side px) of the scikit-image photos with
captions, the demo corpus's recorded speech clips (with transcripts) and texts. Then, per modality of the space:

    prepare   up to 4,096 items decoded and prepared in this one process (a decode process's rate)
    encode    the encoder alone over those prepared items in batches of --batch-size on --device (or cuda:0
              with --gpus): from inputs in memory to vectors back, repeated for at least --seconds (5)
    model     for images, the model's image tower alone on one batch already on the device (the raw forward)
    embed     `mmindex embed` on the same dataset (one worker, or one per GPU with --gpus), once per
              --decode-workers and --decode value: reading shards, decoding in the decode processes (or on the
              device), encoding and committing; samples/s from its recorded per-modality worker time, the share
              of that time the worker waited for its next decoded batch, and the CPU cores the run kept busy
              (CPU seconds of this process and its children over wall seconds)

A ratio embed / model near 1.0 means decoding, transfers and I/O are hidden behind the model. Where it is low,
the waiting share says which side is short: near 100%, the decode processes do not keep up (too few, or starved
of cores); near 0%, the worker's own loop between batches is the bound (copies, the hand-over, the GIL).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import real_data
from mmindex import jpeg
from mmindex.dataset import Dataset
from mmindex.demo import CORPUS
from mmindex.embed.run import EmbedSettings, embed
from mmindex.embed.shard import Chunk, prepare_chunk, shard_items
from mmindex.embed.steps import decode_processes, devices
from mmindex.embed.transfer import Blocks, pack
from mmindex.encoders.base import inference
from mmindex.encoders.conse import NEEDS
from mmindex.encoders.device_decode import DECODES, nvjpeg, on_device
from mmindex.encoders.inputs import load_rgb
from mmindex.executors.local import LocalExecutor
from mmindex.ingest.run import IngestSettings, ingest
from mmindex.jpeg import Need
from mmindex.media import Limits, inspect_image
from mmindex.spaces import resolve_space


def build_corpus(root: Path, images: int, max_side: int) -> None:
    (root / "photos").mkdir(parents=True)
    blocks = [range(start, min(images, start + 256)) for start in range(0, images, 256)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_save_crops, [root / "photos"] * len(blocks), blocks, [max_side] * len(blocks)))
    for folder in ("speech", "texts"):
        shutil.copytree(CORPUS / folder, root / folder)


def _photos() -> list[tuple[str, np.ndarray]]:
    """scikit-image's photos, or where it is not installed (the GPU machine's image) the demo corpus's."""
    try:
        return [(name, array) for name, array, _ in real_data.skimage_photos()]
    except ImportError:
        return [(path.stem, np.asarray(Image.open(path).convert("RGB")))
                for path in sorted((CORPUS / "photos").glob("*.jpg"))]


def _save_crops(folder: Path, numbers: range, max_side: int) -> None:
    """JPEG crops (256 to max_side px) of the scikit-image photos with captions; crop ``i`` is the same in any
    process."""
    photos = [(name, array) for name, array in _photos() if array.ndim == 3]
    for i in numbers:
        rng = np.random.default_rng(i)
        name, array = photos[i % len(photos)]
        image = Image.fromarray(array[..., :3])
        w, h = image.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        side = int(rng.integers(256, max_side + 1))
        crop = image.crop((x, y, x + cw, y + ch))
        crop = crop.resize((side, max(1, round(side * ch / cw))), Image.Resampling.BICUBIC)
        crop.save(folder / f"{name}_{i:05d}.jpg", quality=90)
        (folder / f"{name}_{i:05d}.txt").write_text(f"a photo: {name.replace('_', ' ')} {i}")


@contextlib.contextmanager
def pillow_only() -> Iterator[None]:
    """Every image through Pillow, as before mmindex.jpeg: its test for a plain JPEG answers no."""
    plain_header = jpeg.plain_header
    jpeg.plain_header = lambda data, max_pixels: None
    try:
        yield
    finally:
        jpeg.plain_header = plain_header


def _per_second(fn: Callable[[bytes], object], files: list[bytes], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while not done or time.perf_counter() - started < seconds:
        for data in files:
            fn(data)
        done += len(files)
    return done / (time.perf_counter() - started)


def decode_rates(preparer: Callable[[bytes], object], need: Need | None, seconds: float) -> None:
    """Images/s in this one process for JPEGs of 256-2048 px (long side, 4:3): decoding alone, the space's image
    preparer and ingest's check, each through Pillow alone (before) and with libjpeg-turbo (after)."""
    photos = [array[..., :3] for _, array in _photos() if array.ndim == 3][:8]
    print(f"\ndecode rates, images/s in one process (the space's resize needs {need})\n")
    print("| long side | Pillow full decode | libjpeg-turbo, DCT-scaled | after / before | preparer before "
          "| preparer after | after / before | ingest check before | ingest check after | after / before |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for side in (256, 512, 1024, 2048):
        files = []
        for array in photos:
            buffer = io.BytesIO()
            Image.fromarray(array).resize((side, side * 3 // 4), Image.Resampling.BICUBIC).save(buffer, "JPEG",
                                                                                                quality=90)
            files.append(buffer.getvalue())
        measured = {}
        for label, pillow in (("before", True), ("after", False)):
            with pillow_only() if pillow else contextlib.nullcontext():
                measured[label] = (_per_second(lambda data: load_rgb(data, need=need), files, seconds),
                                   _per_second(preparer, files, seconds),
                                   _per_second(lambda data: inspect_image(data, Limits()), files, seconds))
        row = [f"{side}"]
        for part in range(3):
            before, after = measured["before"][part], measured["after"][part]
            row += [f"{before:,.0f}", f"{after:,.0f}", f"{after / before:.1f}x"]
        print("| " + " | ".join(row) + " |")


def handover_times(batch_size: int, rounds: int = 40) -> None:
    """The hand-over of one batch of prepared 224 px images, in this process: a decode process's side (pack into a
    block of the worker's) and the worker's (read it, stack it into the encoder's input), median ms per batch."""
    images = [np.random.default_rng(i).integers(0, 256, (3, 224, 224), dtype=np.uint8) for i in range(batch_size)]
    staging = np.empty((batch_size, 3, 224, 224), np.uint8)
    blocks, packing, reading = Blocks(most=2), [], []
    for _ in range(rounds + 5):  # the first rounds make and map the blocks
        started = time.perf_counter()
        packed = pack(images, into=blocks.take())
        packed_at = time.perf_counter()
        with blocks.received(packed) as prepared:
            np.stack(prepared, out=staging)
        packing.append(packed_at - started)
        reading.append(time.perf_counter() - packed_at)
    blocks.close()
    print(f"\nhand-over of a batch of {batch_size} images ({staging.nbytes / 2**20:.0f} MB) through shared memory: "
          f"pack {np.median(packing[5:]) * 1e3:.1f} ms, read and stack {np.median(reading[5:]) * 1e3:.1f} ms")


def _need(preparer: object) -> Need | None:
    """The decoded size a preparer's resize needs (a Hugging Face processor's, or an offline view's)."""
    return getattr(preparer, "need", None) or NEEDS.get(getattr(preparer, "view", ""))


def cpu_seconds() -> float:
    """CPU seconds of this process and of its children that ended (workers, and through them their decoders)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def raw_rate(encoder, path: str, modality: str, batch_size: int,
             seconds: float) -> tuple[float, float, float | None]:
    """(prepare items/s in this one process, encode items/s, model-only items/s): up to 4,096 items prepared
    beforehand, then the encoder's batches alone over them (from prepared inputs in memory to vectors back),
    repeated for at least ``seconds``; for images also the model's forward alone, its input already on the device."""
    items = [i for i in shard_items(path) if i.modality == modality][:4096]
    started = time.perf_counter()
    prepared = [x for x in prepare_chunk(Chunk(path, modality, items), {modality: encoder.preparer()})
                if not isinstance(x, Exception)]
    prepare_rate = len(items) / (time.perf_counter() - started)
    batches = [prepared[start:start + batch_size] for start in range(0, len(prepared), batch_size)]
    encoder.encode(batches[0])  # warm-up
    _synchronize(encoder)
    done, started = 0, time.perf_counter()
    while not done or time.perf_counter() - started < seconds:
        for batch in batches:
            encoder.encode(batch)
            done += len(batch)
        encode_rate = done / (time.perf_counter() - started)
    return prepare_rate, encode_rate, model_rate(encoder, batches[0], seconds) if modality == "image" else None


def model_rate(encoder, batch: list, seconds: float) -> float | None:
    """Images/s of the model's image tower alone on a batch already on the device (a Hugging Face encoder that
    decodes on the host: one that decodes on the device is given JPEG files' bytes, not pixels)."""
    if not hasattr(encoder, "pixels") or encoder.device_images is not None:
        return None
    pixels = encoder.pixels(batch)
    done, started = 0, time.perf_counter()
    with inference(encoder.device):
        while not done or time.perf_counter() - started < seconds:
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
    parser.add_argument("--decode", nargs="+", default=["auto"], choices=DECODES,
                        help="one `mmindex embed` run per value (and per --decode-workers value)")
    parser.add_argument("--max-side", type=int, default=512, help="largest side of the corpus's JPEGs")
    parser.add_argument("--decode-only", action="store_true", help="only the decode rates")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="each encode and model rate is timed over at least this long, each decode rate a fifth")
    args = parser.parse_args()
    model = args.model
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mmindex-embed-bench-"))
    if args.random_clip_vit_b32:
        from tiny_models import save_random_clip_vit_b32

        model = str(save_random_clip_vit_b32(workdir / "clip-vit-b32-random"))
    space = resolve_space(model)
    device = "cuda:0" if args.gpus else args.device
    encoders = space.load(device)
    if "image" in encoders:
        preparer = encoders["image"].preparer()
        decode_rates(preparer, _need(preparer), args.seconds / 5)
    if args.decode_only:
        return
    handover_times(args.batch_size)
    corpus, dataset = workdir / "corpus", workdir / "dataset"
    started = time.perf_counter()
    if not corpus.exists():
        build_corpus(corpus, args.images, args.max_side)
    if not dataset.exists():
        ingest(IngestSettings((str(corpus),), str(dataset), shard_size="100000", workers=os.cpu_count() or 1))
    print(f"corpus and dataset ready in {time.perf_counter() - started:.1f} s")
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {name}, batch {args.batch_size}, "
          f"space {space.name}, nvJPEG {'there' if nvjpeg() else 'not there'}")

    path = Dataset(str(dataset)).shard_path(0)
    raw = {(m, "cpu"): raw_rate(encoders[m], path, m, args.batch_size, args.seconds) for m in sorted(encoders)}
    if any(on_device(decode, device) for decode in args.decode) and encoders.get("image", None) is not None \
            and encoders["image"].decode_on_device():  # prepare: reading bytes; encode: decoding on the device too
        prepare_rate, encode_rate, _ = raw_rate(encoders["image"], path, "image", args.batch_size, args.seconds)
        raw["image", "device"] = prepare_rate, encode_rate, raw["image", "cpu"][2]  # the same model alone
    del encoders
    print("\n| modality | decode | decode workers | items | prepare items/s (1 process) | model alone items/s "
          "| encode items/s | `mmindex embed` items/s | embed / encode | embed / model | waiting for input "
          "| CPU cores used |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for decode_workers in args.decode_workers:
        for decode in args.decode:
            shutil.rmtree(dataset / "embeddings", ignore_errors=True)
            settings = EmbedSettings(str(dataset), model, gpus=args.gpus, device=args.device,
                                     batch_size=args.batch_size, decode_workers=decode_workers, decode=decode)
            workers = devices(settings.gpus, settings.device, settings.workers)
            cpu, wall = cpu_seconds(), time.perf_counter()
            report = embed(settings, LocalExecutor(devices=workers))
            cores = (cpu_seconds() - cpu) / (time.perf_counter() - wall)
            chosen = decode_processes(decode_workers, workers[0], len(workers))
            where = "device" if on_device(decode, workers[0]) else "cpu"
            for modality, embedded in sorted(report.embedded.items()):
                prepare_rate, encode_rate, alone = raw.get((modality, where)) or raw[modality, "cpu"]
                rate = report.rate(modality) or 0.0
                print(f"| {modality} | {decode} ({where}) | {chosen} | {embedded:,} | {prepare_rate:,.0f} | "
                      + (f"{alone:,.0f}" if alone else "-") + f" | {encode_rate:,.0f} | {rate:,.0f} | "
                      f"{rate / encode_rate:.2f} | " + (f"{rate / alone:.2f}" if alone else "-")
                      + f" | {report.waiting(modality) or 0:.0%} | {cores:.1f} |")
            print(f"whole run: {report.wall_seconds:.1f} s wall (including loading the models); skipped "
                  + json.dumps({f"{m}: {r}": n for (m, r), n in report.skipped.items()}))


if __name__ == "__main__":
    main()
