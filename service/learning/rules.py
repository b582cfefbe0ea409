"""The rollback and drift rules: numbers in, a decision out (no torch, no I/O)."""

from __future__ import annotations

import math

from service.learning.early_stopping import Mode

TINY = 1e-12


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


def drifted(score: float, at_stop: float | None, mode: Mode, tolerance: float) -> bool:
    """The served version does worse on fresh data than when training stopped: the world moved."""
    if at_stop is None:
        return False
    if not math.isfinite(score):
        return True
    return relative_worsening(score, at_stop, mode) > tolerance
