"""Learning-rate schedules: constant, linear warm-up, and reduce-on-plateau.

Pure functions of numbers, table-tested without torch. The trainer sets the rate before every
optimizer step from `learning_rate`; reduce-on-plateau moves only at validation rounds
(`after_round`), and its state is three plain numbers on the learner's `Control`, so it is
stored with every transition and in every recovery snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from service.learning.early_stopping import Mode, better

LrSchedule = Literal["constant", "warmup", "reduce_on_plateau"]


@dataclass(frozen=True)
class ScheduleConfig:
    kind: LrSchedule
    warmup_steps: int
    factor: float
    patience: int
    min_lr: float


@dataclass(frozen=True)
class Plateau:
    """Reduce-on-plateau's state: the rate in force (None: the optimizer's own), the best
    score seen and the rounds since it improved."""

    lr: float | None = None
    best: float | None = None
    wait: int = 0


def learning_rate(config: ScheduleConfig, base_lr: float, *, step: int, plateau: Plateau) -> float:
    """The rate of optimizer step number `step` + 1 (steps count from 0)."""
    if config.kind == "warmup":
        return base_lr * min(1.0, (step + 1) / config.warmup_steps)
    if config.kind == "reduce_on_plateau" and plateau.lr is not None:
        return plateau.lr
    return base_lr


def after_round(
    config: ScheduleConfig, base_lr: float, plateau: Plateau, score: float, mode: Mode
) -> Plateau:
    """A round without improvement for `patience` rounds in a row multiplies the rate by
    `factor`, never below `min_lr`, and starts counting again."""
    if config.kind != "reduce_on_plateau":
        return plateau
    current = base_lr if plateau.lr is None else plateau.lr
    improved = math.isfinite(score) and (plateau.best is None or better(score, plateau.best, mode))
    if improved:
        return Plateau(current, score, 0)
    if plateau.wait + 1 < config.patience:
        return Plateau(current, plateau.best, plateau.wait + 1)
    return Plateau(max(current * config.factor, config.min_lr), plateau.best, 0)
