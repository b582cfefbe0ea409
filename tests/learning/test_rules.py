"""The rollback and drift rules, table-tested (no torch)."""

from __future__ import annotations

import math

import pytest

from service.learning.early_stopping import Mode
from service.learning.rules import (
    Paired,
    Spread,
    drifted,
    fresh_enough,
    needs_evidence,
    rollback_reason,
    significant_drift,
    significantly_worse,
)


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


@pytest.mark.parametrize(
    ("score", "best", "mode", "evidence", "expected"),
    [
        (1.5, 1.0, "min", 3.0, True),  # degraded but not broken: ask the rows
        (4.0, 1.0, "min", 3.0, True),  # 4× the best loss is still within CATASTROPHIC
        (4.5, 1.0, "min", 3.0, False),  # beyond: roll back at once
        (0.1, 0.9, "max", 3.0, True),  # accuracies never reach CATASTROPHIC
        (1.5, 1.0, "min", None, False),  # the test is off: the relative rule alone
    ],
)
def test_needs_evidence(
    score: float, best: float, mode: Mode, evidence: float | None, expected: bool
) -> None:
    assert needs_evidence(score, best, mode, evidence) is expected


@pytest.mark.parametrize(
    ("head", "best", "stderr", "mode", "expected"),
    [
        (0.0090, 0.0067, 0.0010, "min", False),  # 34 % worse, 2.3 standard errors: noise
        (0.0090, 0.0067, 0.0005, "min", True),  # 34 % worse, 4.6 standard errors: real
        (0.105, 0.100, 0.0001, "min", False),  # significant, but within the tolerance
        (0.80, 0.95, 0.02, "max", False),  # 16 % worse accuracy: within the tolerance
        (0.70, 0.95, 0.02, "max", True),  # 26 % worse, 12.5 standard errors
        (0.70, 0.95, 0.10, "max", False),  # 26 % worse but 2.5 standard errors
        (math.inf, 0.1, 0.0, "min", True),
    ],
)
def test_significantly_worse(
    head: float, best: float, stderr: float, mode: Mode, expected: bool
) -> None:
    assert significantly_worse(Paired(head, best, stderr), mode, 0.2, 3.0) is expected


@pytest.mark.parametrize(
    ("fresh", "minimum", "capacity", "expected"),
    [(0, 100, 2000, False), (99, 100, 2000, False), (100, 100, 2000, True), (60, 100, 50, True)],
)
def test_fresh_enough(fresh: int, minimum: int, capacity: int, expected: bool) -> None:
    assert fresh_enough(fresh, minimum, capacity) is expected


@pytest.mark.parametrize(
    ("fresh", "at_stop", "mode", "expected"),
    [
        (Spread(0.0106, 0.004), Spread(0.0017, 0.001), "min", False),  # 6× a tiny loss: noise
        (Spread(1.9, 0.1), Spread(0.2, 0.02), "min", True),  # the world moved
        (Spread(0.60, 0.05), Spread(0.95, 0.01), "max", True),
        (Spread(0.90, 0.03), Spread(0.95, 0.01), "max", False),
        (Spread(math.nan, 0.0), Spread(0.2, 0.02), "min", True),
    ],
)
def test_significant_drift(fresh: Spread, at_stop: Spread, mode: Mode, expected: bool) -> None:
    assert significant_drift(fresh, at_stop, mode, 3.0) is expected
