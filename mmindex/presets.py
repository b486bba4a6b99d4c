"""The shipped presets: model spaces (``--model``) and Beam runner profiles (``--profile``).

They live in the repository's top-level configs/ folder, which pyproject.toml installs as the package
``mmindex.configs``: found through the package, they are there in a wheel as in an editable install.
"""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Literal

import yaml


def folder(kind: Literal["spaces", "runners"]) -> Path:
    """The folder of one kind of preset, ``NAME.yaml`` each (pip installs packages as files, so it is a Path)."""
    return Path(str(files("mmindex.configs") / kind))


_RUNNERS = folder("runners")
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def profile_args(profile: str) -> list[str]:
    """Beam options (``--name=value``) from a runner profile: a name in configs/runners/ or a YAML path.

    Values may name environment variables, ``${VAR}`` or ``${VAR:-default}``, so that one profile serves
    several clusters; a variable that is neither set nor defaulted is an error, not an empty option.
    """
    path = Path(profile) if profile.endswith((".yaml", ".yml")) else _RUNNERS / f"{profile}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in _RUNNERS.glob("*.yaml")))
        raise FileNotFoundError(f"no runner profile {profile!r} (known: {known}; or give a .yaml path)")
    options = (yaml.safe_load(path.read_text()) or {}).get("options") or {}

    def expand(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name, default)
        if value is None:
            raise ValueError(f"runner profile {path.name} needs the environment variable {name}")
        return value

    return [f"--{name}={_VARIABLE.sub(expand, str(value))}" for name, value in options.items()]
