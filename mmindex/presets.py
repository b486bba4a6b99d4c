"""The shipped presets: model spaces (``--model``) and Beam runner profiles (``--profile``).

They live in the repository's top-level configs/ folder, which pyproject.toml installs as the package
``mmindex.configs``: found through the package, they are there in a wheel as in an editable install.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal


def folder(kind: Literal["spaces", "runners"]) -> Path:
    """The folder of one kind of preset, ``NAME.yaml`` each (pip installs packages as files, so it is a Path)."""
    return Path(str(files("mmindex.configs") / kind))
