"""The lock file agrees with pyproject.toml, and every runtime import is a declared dependency."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Import names that differ from their distribution's name.
DISTRIBUTION = {"sklearn": "scikit-learn", "grpc": "grpcio", "google": "protobuf"}


def _name(requirement: str) -> str:
    return re.split(r"[\[=<>!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_pin_in_pyproject_is_the_locked_version() -> None:
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += [r for r in extra if not r.startswith("gradual[")]
    locked = _locked()
    for requirement in requirements:
        if "==" in requirement:
            pinned = requirement.split("==", 1)[1].split(";")[0].strip()
            assert locked.get(_name(requirement)) == pinned, requirement


def test_the_service_imports_only_declared_runtime_dependencies() -> None:
    """Third-party modules imported by the service outside its optional extras."""
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    optional = {"sklearn", "matplotlib", "pyarrow"}  # imported behind a check of their extra
    imported: set[str] = set()
    for path in (ROOT / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"service", "models", "migrations"}
    undeclared = {
        module for module in third_party - optional
        if DISTRIBUTION.get(module, module).replace("_", "-") not in declared
    }  # fmt: skip
    assert undeclared == set()
