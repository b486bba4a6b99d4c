"""The built-in demo corpus: a few MB of real photos, clipart, sounds, speech and texts (see ATTRIBUTION.md)."""

from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"
