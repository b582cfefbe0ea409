"""Dependencies point down: the API layer runs no torch, the learning package writes no SQL,
storage knows nothing of requests, and the client package needs neither torch nor the server.

Read from the source with `ast` (every import statement, those inside functions and
TYPE_CHECKING blocks included), so a forbidden import fails here before anything runs it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).parents[1] / "service"

# package → modules it must never import (a name forbids its submodules too)
FORBIDDEN = {
    "learning": (
        "sqlalchemy", "redis", "fastapi", "starlette", "service.storage", "service.runtime",
        "service.api", "service.streaming", "service.cli",
    ),
    "storage": ("fastapi", "starlette", "service.runtime", "service.api", "service.streaming"),
    "api": ("torch", "sqlalchemy", "service.storage.db.engine", "service.storage.registry"),
    "client": ("torch", "fastapi", "sqlalchemy", "service.runtime", "service.storage"),
}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def _violations(package: str) -> list[str]:
    found = []
    for path in sorted((SERVICE / package).rglob("*.py")):
        for name in sorted(imports_of(path)):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN[package]):
                found.append(f"{path.relative_to(SERVICE.parent)} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_the_package_imports_nothing_above_or_beside_it(package: str) -> None:
    assert _violations(package) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from service.storage.registry import Registry\n")
    assert "service.storage.registry" in imports_of(module)
