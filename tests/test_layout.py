"""The shape of the package (docs/contributing.md, "The rules the layout keeps")."""

from __future__ import annotations

import ast
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from tests.conftest import repo_root

PACKAGE = repo_root() / "symbolon"


@cache
def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imported(name: str, path: Path) -> Iterator[str]:
    """The project's modules that ``name`` imports, at the top or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in modules() else base for t in targets]
        else:
            continue
        for target in targets:
            while target and target not in modules():
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


@cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(_imported(name, path)) for name, path in modules().items()}


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph()[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_has_no_circle():
    circles = sorted(name for name in graph() if name in reachable(name))
    assert circles == []


def test_settings_import_nothing_else_of_the_project():
    for name in modules():
        if name == "symbolon.conf" or name.startswith("symbolon.conf."):
            outside = {m for m in graph()[name] if not m.startswith("symbolon.conf")}
            assert outside == set(), name


def test_nothing_the_composition_root_builds_on_imports_it():
    below = reachable("symbolon.runtime")
    assert sorted(m for m in below if "symbolon.runtime" in graph()[m]) == []


def test_domain_packages_never_import_the_composition_root():
    domain = ("symbolon.uploads", "symbolon.symbols", "symbolon.crashes", "symbolon.storage")
    importers = [m for m in modules() if m.startswith(domain) and "symbolon.runtime" in graph()[m]]
    assert importers == []


SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")


def test_upload_handlers_hold_no_sql():
    handlers = sorted((PACKAGE / "handlers").glob("*upload*.py"))
    assert handlers, "the upload handlers moved: update this test"
    holding = [p.name for p in handlers if SQL.search(p.read_text())]
    assert holding == []


def test_references_stay_inside_the_repository():
    tracked = subprocess.run(
        ["git", "ls-files", "*.py", "*.md", "*.toml", "Makefile"],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    outside = re.compile(r"\u00a7|\bspec/(symbols|crashes|symbolication)\.md")
    pointing = [f for f in tracked if outside.search((repo_root() / f).read_text())]
    assert pointing == []


def test_test_modules_share_helpers_through_support_modules():
    tests = repo_root() / "tests"
    importing = [
        p.name
        for p in sorted(tests.glob("test_*.py"))
        if re.search(
            r"^\s*(from tests\.test_|from tests import test_|import tests\.test_)",
            p.read_text(),
            re.MULTILINE,
        )
    ]
    assert importing == []
