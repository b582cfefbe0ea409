"""Early stopping as a small state machine over validation scores (no torch, no I/O).

The union of Keras' and Lightning's semantics, checked in a fixed order each round:
non-finite → stopping_threshold → divergence_threshold → improvement → patience.
`baseline` must be beaten before patience stops counting; rounds before `start_from`
steps are not monitored at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

Mode = Literal["min", "max"]
StopReason = Literal["patience", "stopping_threshold", "divergence_threshold", "non_finite"]


@dataclass(frozen=True)
class StopperConfig:
    mode: Mode = "min"
    min_delta: float = 0.0
    patience: int = 10
    baseline: float | None = None
    start_from: int = 0
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None


@dataclass(frozen=True)
class Decision:
    improved: bool = False
    stop: StopReason | None = None
    monitored: bool = True


@dataclass
class StopperState:
    """Plain data, so it is stored with the model and survives a restart."""

    best: float | None = None
    best_step: int | None = None
    wait: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StopperState:
        return cls(**data)


def better(score: float, reference: float, mode: Mode, min_delta: float = 0.0) -> bool:
    """`score` beats `reference` by more than `min_delta` in the direction `mode` prefers."""
    if mode == "min":
        return score < reference - min_delta
    return score > reference + min_delta


class EarlyStopper:
    def __init__(self, config: StopperConfig, state: StopperState | None = None) -> None:
        self.config = config
        self.state = state or StopperState()

    def reset(self) -> None:
        self.state = StopperState()

    def restart_from(self, score: float | None) -> None:
        """A new yardstick (a new leader, a manual rollback): `score` is the best, patience
        starts over."""
        self.state.best, self.state.wait = score, 0

    def patience_restored(self) -> None:
        self.state.wait = 0

    def update(self, score: float, step: int) -> Decision:
        config, state = self.config, self.state
        if step < config.start_from:
            return Decision(monitored=False)
        if not math.isfinite(score):
            return Decision(stop="non_finite")
        if config.stopping_threshold is not None and better(
            score, config.stopping_threshold, config.mode
        ):
            return self._improve(score, step, stop="stopping_threshold")
        if config.divergence_threshold is not None and better(
            config.divergence_threshold, score, config.mode
        ):
            return Decision(stop="divergence_threshold")
        state.wait += 1
        if state.best is None or better(score, state.best, config.mode, config.min_delta):
            beats_baseline = config.baseline is None or better(score, config.baseline, config.mode)
            return self._improve(score, step, reset_wait=beats_baseline)
        if state.wait >= config.patience:
            return Decision(stop="patience")
        return Decision()

    def _improve(
        self, score: float, step: int, *, stop: StopReason | None = None, reset_wait: bool = True
    ) -> Decision:
        improved = self.state.best is None or better(score, self.state.best, self.config.mode)
        if improved:
            self.state.best, self.state.best_step = score, step
        if reset_wait:
            self.state.wait = 0
        return Decision(improved=improved, stop=stop)
