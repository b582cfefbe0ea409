"""docs/reliability.md's fault table: every fault the service promises to survive has a row
citing a test (tests/test_doc_references.py checks that each cited test exists)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "reliability.md"
CITED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
FAULTS = [
    "SIGKILL", "SIGTERM", "torn log tail", "corrupt or missing weight file", "disk full",
    "read-only data directory", "PostgreSQL down", "Redis down", "partitioned from Redis",
    "poisoned batch", "100 MB body", "parameter cap",
]  # fmt: skip


def rows() -> list[list[str]]:
    """The fault table's rows (header and rule left out), as lists of cells."""
    section = TABLE.read_text().split("## The fault table", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    table = [line for line in lines if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in table[2:]]


def test_every_row_has_four_columns_and_cites_a_test() -> None:
    for row in rows():
        assert len(row) == 4, row
        assert CITED.findall(row[3]), f"no test cited for {row[0]!r}"


def test_every_fault_the_service_survives_has_a_row() -> None:
    faults = " ".join(row[0] for row in rows())
    assert [fault for fault in FAULTS if fault not in faults] == []
