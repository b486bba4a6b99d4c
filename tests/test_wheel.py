"""The wheel carries everything mmindex reads at run time: every module and data file of its packages, and
configs/ (model-space presets, runner profiles) as mmindex.configs. Only the editable install was ever tried
before, and a wheel without its presets could not embed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"mmindex": "mmindex", "pipelines": "pipelines", "configs": "mmindex/configs"}  # folder: place in wheel
JUNK = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built as CI and users build it, from a copy of the sources (a stale build/ folder plays no part)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for folder in SOURCES:
        shutil.copytree(ROOT / folder, source / folder, ignore=JUNK)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    str(source), "-w", str(out)], check=True, capture_output=True)
    return next(out.glob("mmindex-*.whl"))


def test_the_wheel_holds_every_file_of_the_packages_and_configs(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{place}/{path.relative_to(ROOT / folder).as_posix()}"
                for folder, place in SOURCES.items()
                for path in (ROOT / folder).rglob("*")
                if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}
    assert {"mmindex/configs/spaces/offline.yaml", "mmindex/configs/runners/dask.yaml",
            "mmindex/demo/ATTRIBUTION.md", "mmindex/serve/static/index.html"} <= expected
    assert len([n for n in expected if n.startswith("mmindex/demo/corpus/")]) > 100
    assert sorted(expected - names) == []


CHECK = """
import sys
from pathlib import Path

from mmindex.presets import folder
from mmindex.spaces import resolve_space
from mmindex.presets import profile_args

site = Path(sys.argv[1])
assert folder("spaces").is_relative_to(site) and folder("runners").is_relative_to(site), folder("spaces")
print(resolve_space("offline").name, profile_args("portable")[0])
"""


def test_the_installed_package_finds_its_presets(wheel: Path, tmp_path: Path):
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    zipfile.ZipFile(wheel).extractall(site)   # what pip installs from a pure-Python wheel, scripts aside
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=elsewhere, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["offline", "--runner=PortableRunner"]
