"""The built-in demo corpus: a few MB of real photos, clipart, sounds, speech and texts (see ATTRIBUTION.md);
and the dataset `mmindex demo` built last, remembered so that search and serve find it from any folder."""

from __future__ import annotations

import os
from pathlib import Path

from mmindex import storage

CORPUS = Path(__file__).parent / "corpus"


def data_folder() -> Path:
    """mmindex's folder in the user's data directory: $XDG_DATA_HOME/mmindex, else ~/.local/share/mmindex."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "mmindex"


def remember_dataset(dataset: Path) -> Path:
    """Records ``dataset`` (made absolute) as the default dataset; returns the file that records it."""
    record = data_folder() / "demo-dataset"
    storage.write_atomic(str(record), f"{dataset.resolve()}\n".encode())  # a reader never sees half a path
    return record


def remembered_dataset() -> str | None:
    """The dataset the demo built last, if it is recorded and still there."""
    record = data_folder() / "demo-dataset"
    try:
        dataset = record.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return dataset if dataset and Path(dataset).is_dir() else None
