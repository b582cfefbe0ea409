"""Learning-rate schedules as tables of numbers: the rate of each step, and reduce-on-plateau's
decisions after each validation round."""

from __future__ import annotations

import math

import pytest

from service.learning.schedule import Plateau, ScheduleConfig, after_round, learning_rate

BASE = 0.01
# never below min_lr (0.002): 0.01 → 0.005 → 0.0025 → 0.002 → 0.002, two rounds each
FLOORED = [(rate, wait) for rate in (0.01, 0.005, 0.0025, 0.002) for wait in (0, 1)] + [(0.002, 0)]


def config(kind: str, **fields: float) -> ScheduleConfig:
    values = {"warmup_steps": 4, "factor": 0.5, "patience": 2, "min_lr": 0.002} | fields
    return ScheduleConfig(kind, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 0.0025), (1, 0.005), (2, 0.0075), (3, 0.01), (4, 0.01), (1000, 0.01)],
)
def test_warmup_rises_linearly_to_the_optimizer_rate_over_warmup_steps(
    step: int, expected: float
) -> None:
    assert learning_rate(config("warmup"), BASE, step=step, plateau=Plateau()) == expected


@pytest.mark.parametrize("step", [0, 7, 10_000])
def test_constant_keeps_the_optimizer_rate_whatever_the_plateau_says(step: int) -> None:
    plateau = Plateau(lr=0.001, best=0.5, wait=1)
    assert learning_rate(config("constant"), BASE, step=step, plateau=plateau) == BASE


def test_reduce_on_plateau_uses_its_own_rate_once_it_has_one() -> None:
    cfg = config("reduce_on_plateau")
    assert learning_rate(cfg, BASE, step=5, plateau=Plateau()) == BASE
    assert learning_rate(cfg, BASE, step=5, plateau=Plateau(lr=0.004)) == 0.004


def rates(scores: list[float], mode: str = "min", **fields: float) -> list[tuple[float, int]]:
    """(rate, wait) after each round of `scores`."""
    cfg, plateau, seen = config("reduce_on_plateau", **fields), Plateau(), []
    for score in scores:
        plateau = after_round(cfg, BASE, plateau, score, mode)  # type: ignore[arg-type]
        assert plateau.lr is not None
        seen.append((plateau.lr, plateau.wait))
    return seen


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        # improving: the rate stays, the wait stays at zero
        ([1.0, 0.9, 0.8], [(0.01, 0), (0.01, 0), (0.01, 0)]),
        # patience 2: the second round without improvement halves the rate, the count restarts
        ([1.0, 1.1, 1.2], [(0.01, 0), (0.01, 1), (0.005, 0)]),
        # an improvement in between resets the count
        ([1.0, 1.1, 0.9, 1.0, 1.0], [(0.01, 0), (0.01, 1), (0.01, 0), (0.01, 1), (0.005, 0)]),
        ([1.0] + [2.0] * 8, FLOORED),
        # a non-finite score is no improvement (and not a best to beat)
        ([math.nan, 1.0, math.nan, math.inf], [(0.01, 1), (0.01, 0), (0.01, 1), (0.005, 0)]),
    ],
)
def test_reduce_on_plateau_multiplies_the_rate_by_factor_after_patience_rounds(
    scores: list[float], expected: list[tuple[float, int]]
) -> None:
    assert rates(scores) == expected


def test_reduce_on_plateau_reads_improvement_in_the_monitor_direction() -> None:
    assert rates([0.5, 0.6, 0.7], mode="max") == [(0.01, 0), (0.01, 0), (0.01, 0)]
    assert rates([0.7, 0.6, 0.5], mode="max") == [(0.01, 0), (0.01, 1), (0.005, 0)]


def test_other_schedules_ignore_rounds() -> None:
    plateau = Plateau()
    assert after_round(config("warmup"), BASE, plateau, 1.0, "min") is plateau
