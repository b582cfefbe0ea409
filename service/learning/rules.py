"""The promotion, rollback and drift rules: numbers in, a decision out (no torch, no I/O)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from service.learning.early_stopping import Mode, better

TINY = 1e-12
# A round this much worse than the best, relative to it (4× the best loss), rolls back at once,
# without asking for evidence: such a head is broken, not unlucky.
CATASTROPHIC = 3.0


@dataclass(frozen=True)
class Paired:
    """The head and the best version scored on the same validation rows, row by row: the mean
    of each, and the standard error of the mean of the per-row differences (head − best)."""

    head: float
    best: float
    stderr: float


@dataclass(frozen=True)
class Spread:
    """A version's per-row values on some rows: their mean and its standard error."""

    mean: float
    stderr: float


def relative_worsening(score: float, reference: float, mode: Mode) -> float:
    """How much worse `score` is than `reference`, relative to |reference| (≤ 0 when not worse)."""
    worse_by = score - reference if mode == "min" else reference - score
    return worse_by / max(abs(reference), TINY)


def rollback_reason(
    score: float, best: float | None, mode: Mode, tolerance: float | None
) -> str | None:
    """Why the head must go back to the best version now, or None when it may carry on."""
    if not math.isfinite(score):
        return "non_finite"
    if best is None or tolerance is None:
        return None
    if relative_worsening(score, best, mode) > tolerance:
        return "degraded"
    return None


def needs_evidence(score: float, best: float, mode: Mode, evidence: float | None) -> bool:
    """Whether a degraded round must be confirmed row by row before it rolls back: not when
    the test is off (`evidence` None) nor when the round is catastrophically worse."""
    return evidence is not None and relative_worsening(score, best, mode) <= CATASTROPHIC


def significantly_worse(paired: Paired, mode: Mode, tolerance: float, evidence: float) -> bool:
    """On the same rows, the head is worse than the best by more than `tolerance` (relative)
    and by more than `evidence` standard errors of the paired difference: a real degradation,
    not the noise of a small buffer or of rows that changed since the best was scored."""
    if not math.isfinite(paired.head):
        return True
    worse_by = paired.head - paired.best if mode == "min" else paired.best - paired.head
    relative = relative_worsening(paired.head, paired.best, mode)
    return relative > tolerance and worse_by > evidence * paired.stderr


def drifted(score: float, at_stop: float | None, mode: Mode, tolerance: float) -> bool:
    """The served version does worse on fresh data than when training stopped: the world moved."""
    if at_stop is None:
        return False
    if not math.isfinite(score):
        return True
    return relative_worsening(score, at_stop, mode) > tolerance


def significant_drift(fresh: Spread, at_stop: Spread, mode: Mode, evidence: float) -> bool:
    """The served version does worse on fresh rows than on the rows at the stop by more than
    `evidence` standard errors of the difference (two independent samples)."""
    if not math.isfinite(fresh.mean):
        return True
    worse_by = fresh.mean - at_stop.mean if mode == "min" else at_stop.mean - fresh.mean
    return worse_by > evidence * math.hypot(fresh.stderr, at_stop.stderr)


def fresh_enough(fresh_rows: int, minimum: int, capacity: int) -> bool:
    """Whether enough rows have arrived since the stop to judge drift on them alone (a buffer
    smaller than `minimum` judges once it is full of fresh rows)."""
    return fresh_rows >= min(minimum, capacity)


def finite_or_none(value: float) -> float | None:
    """A score as events store it: JSON has no NaN or infinity."""
    return value if math.isfinite(value) else None


def promotes(
    policy: Literal["best", "latest", "manual"], score: float,
    served_score: Callable[[], float | None], mode: Mode,
) -> bool:  # fmt: skip
    """Whether an improved head is served: always, never, or when it beats the served
    version (scored only then) or nothing is served yet."""
    if policy != "best":
        return policy == "latest"
    served = served_score()
    return served is None or better(score, served, mode)
