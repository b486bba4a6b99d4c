"""The import graph against the layers the README writes down: no circle among mmindex's modules, no import from
a lower layer up to a higher one, and every top-level module placed in a layer. Also the size bounds that keep a
module readable in one sitting."""

from __future__ import annotations

import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mmindex", "pipelines")


def readme_layers() -> list[list[str]]:
    """The README's layer list, top first: each line one layer, ``|`` between independent modules."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- layers: top first -->\n(.*?)<!-- /layers -->", text, re.S)
    assert block, "README.md has no layer list between <!-- layers: top first --> and <!-- /layers -->"
    return [[name.strip() for name in line.split("|")] for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES)


def circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected groups of modules (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return found


def test_no_import_circles(graph):
    assert circles(graph) == []


def test_tarjan_finds_a_circle():
    """The circle finder itself, on a graph that has one (so an empty answer above means something)."""
    fake = grimp.ImportGraph()
    for name in ("a", "a.x", "a.y", "a.z"):
        fake.add_module(name)
    fake.add_import(importer="a.x", imported="a.y")
    fake.add_import(importer="a.y", imported="a.z")
    fake.add_import(importer="a.z", imported="a.x")
    assert circles(fake) == [["a.x", "a.y", "a.z"]]


def test_imports_follow_the_readme_layers(graph):
    layers = [grimp.Layer(*names, independent=True) for names in readme_layers()]
    illegal = graph.find_illegal_dependencies_for_layers(layers=layers)
    assert sorted(f"{dep.importer} -> {dep.imported}" for dep in illegal) == []


def test_every_module_has_a_layer(graph):
    placed = {name for names in readme_layers() for name in names}
    top_level = {".".join(m.split(".")[:2]) for m in graph.modules if m.startswith("mmindex.")}
    assert sorted(top_level - placed) == []
    assert sorted(placed - top_level - {"pipelines"}) == []


def test_modules_stay_readable():
    lengths = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
               for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    assert {path: n for path, n in lengths.items() if n > 400} == {}
    assert lengths["mmindex/cli.py"] < 300
