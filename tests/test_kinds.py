"""Event and record kinds are one set of types, shared by every producer and consumer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from service.kinds import EVENT_KINDS, MARKER_KINDS, RECORD_KINDS, EventKind, RecordKind

STATIC = Path(__file__).parents[1] / "service" / "static"


def test_the_dashboard_marks_exactly_the_marker_kinds() -> None:
    chart = (STATIC / "chart.js").read_text()
    block = re.search(r"export const MARKERS = \{(.*?)\n\};", chart, re.S)
    assert block is not None
    keys = re.findall(r"^\s+(\w+):", block.group(1), re.M)
    assert keys == list(MARKER_KINDS)


def test_every_kind_the_dashboard_compares_with_is_an_event_kind() -> None:
    compared = set()
    for script in STATIC.glob("*.js"):
        compared |= set(re.findall(r"event\.kind === \"(\w+)\"", script.read_text()))
    assert compared
    assert compared <= set(EVENT_KINDS)


def test_kind_tuples_hold_every_literal_once() -> None:
    assert sorted(EVENT_KINDS) == sorted(set(get_args(EventKind)))
    assert len(EVENT_KINDS) == len(set(EVENT_KINDS))
    assert set(MARKER_KINDS) <= set(EVENT_KINDS)
    assert frozenset(get_args(RecordKind)) == RECORD_KINDS
