"""Rebuilds mmindex/encoders/imagenet_labels.tsv: the 1,000 ImageNet-1k classes in the classifier's output order.

    python benchmarks/make_imagenet_labels.py [--wheel-dir DIR]

The class order (WordNet ids) and their WordNet lemmas are taken from the data files of the timm wheel
(Apache-2.0; the lemmas come from WordNet). The wheel is downloaded, never installed or imported.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "mmindex" / "encoders" / "imagenet_labels.tsv"
INFO = "timm/data/_info/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel-dir", type=Path, help="where to download the timm wheel (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir = args.wheel_dir or Path(tmp)
        subprocess.run(["python3", "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), "timm"],
                       check=True)
        wheel = sorted(wheel_dir.glob("timm-*.whl"))[-1]
        with zipfile.ZipFile(wheel) as archive:
            order = archive.read(INFO + "imagenet_synsets.txt").decode().split()
            lemmas = dict(line.split("\t", 1) for line in
                          archive.read(INFO + "imagenet_synset_to_lemma.txt").decode().splitlines())
    assert len(order) == 1000, len(order)
    OUT.write_text("".join(f"{wnid}\t{lemmas[wnid]}\n" for wnid in order))
    print(f"wrote {OUT} ({len(order)} classes from {wheel.name})")


if __name__ == "__main__":
    main()
