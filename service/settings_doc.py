"""The settings reference (docs/configuration.md), rendered from `Settings` itself.

`python -m service.settings_doc > docs/configuration.md` rewrites it; a test fails when the
page and the class disagree, so the table can never drift from what the service reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from service.config import Settings

HEADER = """# Configuration

Every setting is a `GRADUAL_*` environment variable, read once at start into one typed
`Settings` object (`service/config.py`); nothing else reads the environment. A bad value stops
the service at start with the variable named. This page is generated from that class
(`python -m service.settings_doc > docs/configuration.md`); a test keeps the two in step.

| variable | default | meaning |
|---|---|---|
"""


def render() -> str:
    rows = [_row(name, field) for name, field in Settings.model_fields.items()]
    return HEADER + "\n".join(rows) + "\n"


def _row(name: str, field: FieldInfo) -> str:
    variable = f"`GRADUAL_{name.upper()}`"
    meaning = (field.description or "").replace("|", "\\|")
    return f"| {variable} | {_default(field)} | {meaning} |"


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed at start"
    value: Any = field.get_default()
    if value is None or value == ():
        return "unset"
    if isinstance(value, tuple):
        return "`" + ",".join(str(item) for item in value) + "`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, Path | str | int):
        return f"`{value}`"
    return f"`{value!r}`"


if __name__ == "__main__":
    print(render(), end="")
