"""What the learner asks of whoever records its decisions: the learning package writes no SQL.

The learner decides (a round improved, a degradation rolls back, training stops); a
`Recording` makes each decision durable — the service's `ModelRecorder` writes versions to the
weight store and rows to the registry. Tests of learning alone can pass a recording of their own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service.kinds import EventKind, MoveKind
from service.learning.head import HeadState, TrainingHead


@dataclass(frozen=True)
class Pointers:
    """Which model pointers a change moves, and the controller state to store with it."""

    control: dict[str, Any]
    batch_ids: tuple[str, ...] = ()  # applied since the last checkpoint: recorded with this one
    seq: int | None = None  # the log record that caused the change
    serve: bool = False
    best: bool = False
    head: int | None = None


class Recording(Protocol):
    @property
    def counts(self) -> Counter[EventKind]:
        """Events recorded since start, by kind."""
        ...

    @property
    def last_round(self) -> Mapping[str, Any]:
        """The latest round event's data."""
        ...

    def checkpoint(
        self, head: TrainingHead, *, reason: str, metrics: dict[str, Any], parent: int | None,
        pointers: Pointers, state: HeadState | None = None,
    ) -> int:  # fmt: skip
        """Makes the head a new version (`state`: its state, if already copied); returns its
        number."""
        ...

    def prune(self, *, keep: int, protected: set[int]) -> None:
        """Lets go of old versions' weights beyond the newest `keep` (never `protected`)."""
        ...

    def move(
        self, kind: MoveKind, version: int | None, pointers: Pointers, data: dict[str, Any]
    ) -> None:
        """Moves the model's pointers (served, best, head) or its training state."""
        ...

    def event(self, kind: EventKind, version: int | None, data: dict[str, Any]) -> None:
        """Adds an event to the model's history."""
        ...
