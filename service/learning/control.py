"""The learner's plain data: its control state (stored on the model row at every transition),
the best version it may roll back to, and what one batch did."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from service.learning.early_stopping import StopperState
from service.learning.evaluation import Metrics
from service.learning.head import HeadState
from service.learning.rules import Spread
from service.learning.schedule import Plateau

State = Literal["training", "stopped"]


@dataclass(frozen=True)
class BestVersion:
    """The best version so far, resident in device memory so a rollback reads no file."""

    version: int
    state: HeadState
    score: float | None

    def forgotten(self) -> BestVersion:
        """The same version with no score: a new world's yardstick starts empty."""
        return BestVersion(self.version, self.state, None)


@dataclass
class Control:
    """The learner's plain-data state, stored on the model row at every transition.

    Its fields change only through the methods below, each named for what happened."""

    state: State = "training"
    stopping_reason: str | None = None
    stopper: StopperState = field(default_factory=StopperState)
    rows_seen: int = 0  # every accepted row, held out or not
    served_score_at_stop: float | None = None
    last_round_step: int = 0
    idle_steps: int = 0  # mini-batch-sized chunks received while stopped
    fresh_rows: int = 0  # rows that reached the validation buffer since the stop
    spread_at_stop: list[float] | None = None  # the served version's per-row mean and stderr
    step: int = 0
    samples_seen: int = 0
    plateau: Plateau = field(default_factory=Plateau)  # reduce_on_plateau's state

    def accepted(self, rows: int, *, buffered: int = 0) -> None:
        """`rows` rows came in; `buffered` of them went to the buffer while stopped."""
        self.rows_seen += rows
        self.fresh_rows += buffered

    def round_due(self, step: int, every: int) -> bool:
        """Whether the head's steps crossed an `every` boundary since the last round."""
        return step // every > self.last_round_step // every

    def round_ran(self, step: int) -> None:
        self.last_round_step = step

    def idled(self, rows: int, batch_size: int, every: int) -> bool:
        """Counts rows received while stopped in mini-batch-sized chunks; True when that
        crosses an `every` boundary (a watch round is due)."""
        before = self.idle_steps
        self.idle_steps += math.ceil(rows / batch_size)
        return self.idle_steps // every != before // every

    def stopped(self, reason: str) -> None:
        self.state, self.stopping_reason = "stopped", reason

    def served_at_stop(self, score: float | None, spread: Spread | None) -> None:
        """The served version's yardstick at a stop; fresh rows count from here."""
        self.served_score_at_stop = score
        self.fresh_rows = 0
        self.spread_at_stop = None if spread is None else [spread.mean, spread.stderr]

    def resumed(self, step: int) -> None:
        self.state, self.stopping_reason = "training", None
        self.served_score_at_stop = None
        self.last_round_step = step

    def rescheduled(self, plateau: Plateau) -> None:
        self.plateau = plateau

    def scores_forgotten(self, stopper: StopperState) -> None:
        self.stopper = stopper
        self.plateau = Plateau()  # the rate starts over too

    def to_dict(self, step: int, samples_seen: int) -> dict[str, Any]:
        """The stored form, with the head's counters as of now."""
        self.step, self.samples_seen = step, samples_seen
        data = self.__dict__ | {"stopper": self.stopper.to_dict(), "plateau": asdict(self.plateau)}
        return dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Control:
        if not data:
            return cls()
        plateau = Plateau(**data.get("plateau", {}))
        return cls(
            **(data | {"stopper": StopperState.from_dict(data["stopper"]), "plateau": plateau})
        )


@dataclass(frozen=True)
class LearnReport:
    trained: int
    steps: int
    train_loss: float | None
    prequential: Metrics
    state: State
