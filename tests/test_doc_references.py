"""Every test a page of the docs names (`tests/path.py::test_name`) exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
REFERENCE = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }  # fmt: skip


def test_the_docs_name_tests() -> None:
    assert any(REFERENCE.search(page.read_text()) for page in _pages())


def test_every_test_the_docs_name_exists() -> None:
    missing = []
    for page in _pages():
        for path, name in REFERENCE.findall(page.read_text()):
            source = ROOT / path
            if not source.is_file() or name not in _tests_in(source):
                missing.append(f"{page.name}: {path}::{name}")
    assert missing == []
