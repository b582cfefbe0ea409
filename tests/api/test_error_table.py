"""docs/errors.md is the contract: every code in the error tree is in it, with its status."""

from __future__ import annotations

import re
from pathlib import Path

from service import errors
from service.api.errors import STATUS, status_for

TABLE = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
ROW = re.compile(r"^\| (\d{3}) \| (.+?) \| .+ \|$")
# Codes the HTTP layer writes itself (service/api/errors.py), outside the domain tree.
HTTP_LAYER = {"invalid_field": 422, "method_not_allowed": 405, "internal_error": 500}


def documented() -> dict[str, int]:
    codes: dict[str, int] = {}
    for line in TABLE.read_text().splitlines():
        match = ROW.match(line)
        if match:
            for code in re.findall(r"`([a-z_]+)`", match.group(2)):
                codes[code] = int(match.group(1))
    return codes


def tree(cls: type[errors.GradualError] = errors.GradualError) -> list[type[errors.GradualError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += tree(sub)
    return found


def test_every_code_in_the_error_tree_is_documented_with_its_status() -> None:
    table = documented()
    missing, wrong = [], []
    for cls in tree()[1:]:  # the root's code "error" is never sent
        status = status_for(cls.__new__(cls))
        if cls.code not in table:
            missing.append(cls.code)
        elif table[cls.code] != status:
            wrong.append((cls.code, table[cls.code], status))
    assert (missing, wrong) == ([], [])


def test_every_documented_code_exists() -> None:
    known = {cls.code for cls in tree()} | set(HTTP_LAYER)
    assert set(documented()) - known == set()
    assert all(documented()[code] == status for code, status in HTTP_LAYER.items())


def test_no_error_class_falls_through_to_a_500() -> None:
    assert [cls.code for cls in tree()[1:] if status_for(cls.__new__(cls)) == 500] == []
    assert set(STATUS.values()) >= {400, 401, 403, 404, 409, 410, 413, 415, 422, 429, 503}
