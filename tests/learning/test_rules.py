"""The rollback and drift rules, table-tested (no torch)."""

from __future__ import annotations

import math

import pytest

from service.learning.early_stopping import Mode
from service.learning.rules import drifted, rollback_reason


@pytest.mark.parametrize(
    ("score", "best", "mode", "tolerance", "expected"),
    [
        (1.1, 1.0, "min", 0.2, None),
        (1.3, 1.0, "min", 0.2, "degraded"),
        (0.85, 1.0, "max", 0.2, None),
        (0.75, 1.0, "max", 0.2, "degraded"),
        (math.nan, 1.0, "min", 0.2, "non_finite"),
        (math.inf, None, "min", 0.2, "non_finite"),
        (9.0, None, "min", 0.2, None),
        (9.0, 1.0, "min", None, None),
        (0.5, 1.0, "min", 0.0, None),
    ],
)
def test_rollback_reason(
    score: float, best: float | None, mode: Mode, tolerance: float | None, expected: str | None
) -> None:
    assert rollback_reason(score, best, mode, tolerance) == expected


@pytest.mark.parametrize(
    ("score", "at_stop", "mode", "tolerance", "expected"),
    [
        (0.52, 0.5, "min", 0.1, False),
        (0.60, 0.5, "min", 0.1, True),
        (0.85, 0.9, "max", 0.1, False),
        (0.70, 0.9, "max", 0.1, True),
        (math.nan, 0.5, "min", 0.1, True),
        (5.0, None, "min", 0.1, False),
    ],
)
def test_drift(
    score: float, at_stop: float | None, mode: Mode, tolerance: float, expected: bool
) -> None:
    assert drifted(score, at_stop, mode, tolerance) is expected
