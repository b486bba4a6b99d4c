"""Which text queries the offline space routes through the multilingual bridge, and what that does to recall.

Measured on texts never used for choosing the mapping: short phrases (below, by hand), human translations from
Debian (.desktop files and gettext catalogues, English -> es, de, fr, it, pt: real_data.py), their English
sources, English WordNet lemma -> gloss, and the demo corpus's captions translated into Chinese by hand.

    python benchmarks/language_routing.py --work /tmp/mmindex-bench
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_multilingual_bridge import CHINESE_CAPTIONS, cached, encoders, recall, translations

from mmindex.bridge import multilingual
from mmindex.bridge.multilingual import ENGLISH, MultilingualSettings, languages, routed, shipped_mapping
from mmindex.demo import CORPUS
from real_data import wordnet_glosses

SHORT = {
    "es": ["la luna", "una tortuga", "el perro ladra", "un gato negro", "la casa roja", "el mar", "una manzana",
           "el sol brilla", "un caballo blanco", "la bicicleta"],
    "de": ["das Pferd", "ein Hund bellt", "der Mond", "eine Katze schläft", "das rote Auto", "die Sonne",
           "Eine Ente.", "ein Vogel singt", "der Apfel", "die Schildkröte"],
    "fr": ["le chat noir", "un chien qui aboie", "la lune", "une pomme rouge", "le soleil", "la mer",
           "un cheval blanc", "la tortue", "le vélo", "une fleur jaune"],
    "it": ["il gatto", "la pizza margherita", "una mela rossa", "il cane abbaia", "la luna piena", "un cavallo",
           "il mare", "la tartaruga"],
    "en": ["the moon", "a dog barking", "a photo of a cat", "a red fire engine", "pizza", "coffee", "galaxy", "piano",
           "cat", "turtle", "sunflower", "volcano", "mathematics", "a rooster crowing", "the sun", "a red apple",
           "a black cat", "the sea", "horse", "a bicycle", "an owl hooting", "a cup of coffee on a saucer",
           "grey gravel stones", "a brick wall", "democracy", "a river", "telephone", "soup", "cactus",
           "the eiffel tower"],
}
LOCALES = ("es", "de", "fr", "it", "pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (downloads, embedding cache)")
    parser.add_argument("--per-locale", type=int, default=200, help="catalogue sentences per locale")
    args = parser.parse_args()
    minilm, e5 = encoders()
    settings = MultilingualSettings()
    mapping = shipped_mapping(settings.mapping)

    def route(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        own, bridged = cached(args.work, "minilm", texts, minilm), mapping(cached(args.work, "e5", texts, e5))
        language = languages(texts, own, bridged, settings)
        return routed(own, bridged, language, settings.latin_own_weight), language

    started = time.monotonic()
    multilingual.english_probability("warm up")
    print(f"identifier loaded in {time.monotonic() - started:.2f} s")
    print(f"\nshort phrases routed right (english_below {settings.english_below}, route_below {settings.route_below}):")
    for language, texts in SHORT.items():
        foreign = route(texts)[1] != ENGLISH
        wrong = [t for t, f in zip(texts, foreign, strict=True) if f == (language == "en")]
        print(f"  {language}: {np.mean(~foreign if language == 'en' else foreign):.2f} of {len(texts)}"
              f"{'; wrong: ' + ', '.join(wrong) if wrong else ''}")
    pairs = {locale: [(e, t) for e, t in translations(args.work, locale, args.per_locale) if e != t]
             for locale in LOCALES}
    print("\nheld-out translations -> their English text: share routed away from MiniLM, recall@5 routed")
    for locale, found in pairs.items():
        vectors, language = route([t for _, t in found])
        targets = cached(args.work, "minilm", [e for e, _ in found], minilm)
        print(f"  {locale} n={len(found)}: routed {np.mean(language != ENGLISH):.3f}, "
              f"recall@5 {recall(vectors, targets):.3f}")
    english = sorted({e for found in pairs.values() for e, _ in found})
    print(f"  English sources kept English: {np.mean(route(english)[1] == ENGLISH):.3f} of {len(english)}")
    glosses = wordnet_glosses(args.work, limit=40000)
    chosen = [glosses[i] for i in np.random.default_rng(1).choice(len(glosses), 300, replace=False)]
    words, targets = [w for w, _ in chosen], cached(args.work, "minilm", [g for _, g in chosen], minilm)
    vectors, language = route(words)
    alone = recall(cached(args.work, "minilm", words, minilm), targets)
    print(f"  English WordNet lemma -> gloss recall@5: MiniLM alone {alone:.3f}, routed "
          f"{recall(vectors, targets):.3f} ({np.mean(language == ENGLISH):.3f} kept English)")
    stems = sorted(CHINESE_CAPTIONS)
    captions = {p.stem: p.read_text().strip() for f in ("clipart", "photos") for p in (CORPUS / f).glob("*.txt")}
    vectors, _ = route([CHINESE_CAPTIONS[s] for s in stems])
    targets = cached(args.work, "minilm", [captions[s] for s in stems], minilm)
    print(f"\nChinese caption -> English caption recall@5, {len(stems)} demo captions: {recall(vectors, targets):.3f}")
    texts = [t for found in pairs.values() for _, t in found]
    started = time.monotonic()
    for text in texts:
        multilingual.english_probability(text)
    print(f"identifier: {(time.monotonic() - started) / len(texts) * 1000:.2f} ms per text")


if __name__ == "__main__":
    main()
