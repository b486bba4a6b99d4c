"""Rebuilds the built-in demo corpus (mmindex/demo/corpus) from real, permissively licensed media.

    python benchmarks/make_demo_corpus.py [--out DIR] [--workdir DIR]

Needs scikit-image (pip), Debian's apt-get/dpkg (packages are downloaded and unpacked, not installed) and
rsvg-convert (Debian librsvg2-bin) for the clipart. The output is deterministic: the same files each run.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

import real_data

REPO = Path(__file__).resolve().parents[1]
CLIPART = {
    "animals/armadillo_architetto_fra_01": "a drawing of an armadillo",
    "animals/bison_leif_lodahl_01": "a drawing of a bison",
    "animals/emperor_penguin_ralf_ste_01": "a drawing of an emperor penguin",
    "animals/orca_matthew_gates_r": "a drawing of an orca whale",
    "animals/turtle_jurgen_gaeremyn_01": "a drawing of a turtle",
    "animals/red-eye_frog_mirko_maisc_01": "a drawing of a red-eyed tree frog",
    "transportation/airplane": "a drawing of an airplane",
    "transportation/bicycle_philippe_colin_01": "a drawing of a bicycle",
    "transportation/bus_01": "a drawing of a bus",
    "transportation/fire_engine_romus_01": "a drawing of a red fire engine",
    "transportation/lighthouse_matthew_gates_": "a drawing of a lighthouse",
    "food/apple_bitten_dan_gerhard_01": "a drawing of a bitten apple",
    "food/pizza_pepperoni": "a drawing of a pepperoni pizza",
    "food/bowl_of_steaming_soup_01": "a drawing of a bowl of hot soup",
    "food/cake_and_candle_anton_fr_01": "a drawing of a cake with a candle",
    "tools/hammer_nicu_buculei_01": "a drawing of a hammer",
    "tools/digital_camera_nicu_bucu_01": "a drawing of a digital camera",
    "tools/magnifying_glass_01": "a drawing of a magnifying glass",
    "plants/cactus_linda_kim_01": "a drawing of a cactus",
    "plants/sun_flower_ganson": "a drawing of a sunflower",
    "buildings/eiffel_tower_michael_ja_r": "a drawing of the eiffel tower",
}
WORDS = ["cat", "dog", "cow", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep", "coffee", "rocket",
         "astronaut", "coin", "moon", "galaxy", "clock", "brick", "grass", "gravel", "camera", "bicycle", "bus",
         "airplane", "pizza", "apple", "soup", "cake", "hammer", "cactus", "sunflower", "lighthouse", "penguin",
         "turtle", "telephone", "volcano", "piano", "river", "democracy", "mathematics"]
SPEECH_CLIPS = 30
FLAC_EVERY = 6  # one clip in six is stored as FLAC, so both formats appear


def photos(out: Path) -> None:
    folder = out / "photos"
    folder.mkdir()
    for name, pixels, caption in real_data.skimage_photos():
        image = Image.fromarray(np.asarray(pixels))
        image.thumbnail((512, 512), Image.Resampling.LANCZOS)
        binary = image.mode in ("1", "L") and len(np.unique(np.asarray(image))) <= 2
        stem = folder / (f"{name}_cat" if name == "chelsea" else name)
        if binary or name == "text":
            image.convert("L").save(f"{stem}.png", optimize=True)
        else:
            image.convert("RGB").save(f"{stem}.jpg", quality=90)
        Path(f"{stem}.txt").write_text(caption + "\n")
        license_ = real_data.PHOTOS[name][1]
        Path(f"{stem}.json").write_text(json.dumps({"source": f"scikit-image skimage.data.{name}",
                                                    "license": license_}, sort_keys=True) + "\n")


def clipart(out: Path, workdir: Path) -> None:
    folder = out / "clipart"
    folder.mkdir()
    root = real_data._debian(["openclipart-svg"], workdir) / "usr/share/openclipart/svg"
    for relative, caption in CLIPART.items():
        subject = caption.removeprefix("a drawing of ").split(" ", 1)[1]  # drop the article
        stem = folder / subject.replace(" ", "_").replace("-", "_")
        png = subprocess.run(["rsvg-convert", "--keep-aspect-ratio", "--width", "256", "--height", "256",
                              str(root / f"{relative}.svg")], check=True, capture_output=True).stdout
        # Re-encode through Pillow: rsvg's PNG carries no timestamp, but this keeps the bytes stable anyway.
        image = Image.open(io.BytesIO(png)).convert("RGBA")
        image.save(f"{stem}.png", optimize=True)
        Path(f"{stem}.txt").write_text(caption + "\n")


def sounds(out: Path, workdir: Path) -> None:
    folder = out / "sounds"
    folder.mkdir()
    for mp3, caption in real_data.animal_sounds(workdir):
        shutil.copyfile(mp3, folder / mp3.name)
        (folder / mp3.with_suffix(".txt").name).write_text(caption + "\n")


def speech(out: Path, workdir: Path) -> None:
    folder = out / "speech"
    folder.mkdir()
    seen: set[str] = set()
    sentences = []
    for wav, text in real_data.speech_clips(workdir):
        plain = not any(mark in text for mark in ("(", "[", "...", "…"))  # no stage directions or fragments
        if plain and 4 <= len(text.split()) <= 20 and text.lower() not in seen:
            seen.add(text.lower())
            sentences.append((wav, text))
    step = len(sentences) / SPEECH_CLIPS
    for i in range(SPEECH_CLIPS):
        wav, text = sentences[int(i * step)]
        stem = folder / wav.stem.replace("-", "_")
        if i % FLAC_EVERY == FLAC_EVERY - 1:
            audio, rate = soundfile.read(wav, dtype="int16")
            soundfile.write(f"{stem}.flac", audio, rate, format="FLAC", subtype="PCM_16")
        else:
            shutil.copyfile(wav, f"{stem}.wav")
        Path(f"{stem}.txt").write_text(text + "\n")


def texts(out: Path, workdir: Path) -> None:
    folder = out / "texts"
    folder.mkdir()
    for lemma, gloss in real_data.wordnet_glosses(workdir, words=WORDS):
        (folder / f"{lemma.replace(' ', '_')}.txt").write_text(f"{lemma}: {gloss}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "mmindex" / "demo" / "corpus")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "mmindex-real-data")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    photos(args.out)
    clipart(args.out, args.workdir)
    sounds(args.out, args.workdir)
    speech(args.out, args.workdir)
    texts(args.out, args.workdir)
    files = [p for p in args.out.rglob("*") if p.is_file()]
    print(f"{len(files)} files, {sum(p.stat().st_size for p in files) / 2**20:.1f} MiB in {args.out}")


if __name__ == "__main__":
    main()
