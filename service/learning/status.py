"""A learner's status as its readers see it: a frozen value its writer publishes after each job.

Routes, metrics and the dashboard run on the event loop while the model's worker thread
changes the learner; they read only the latest `LearnerStatus`, which is replaced whole and
never modified, so a reader can neither see a half-applied job nor run a torch call itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from models.spec import NetworkSpec, OptimizerSpec
from service.learning.served import ServedModel
from service.learning.training_config import TrainingConfig

if TYPE_CHECKING:
    from service.learning.control import State
    from service.learning.learner import OnlineLearner


@dataclass(frozen=True)
class LearnerStatus:
    spec: NetworkSpec
    optimizer: OptimizerSpec
    training: TrainingConfig
    state: State
    stopping_reason: str | None
    step: int
    samples_seen: int
    served: ServedModel  # what predict answers with until the next job publishes
    head_version: int
    best_version: int
    best_metric: float | None
    rounds_since_improvement: int
    validation_rows: int
    validation_capacity: int
    class_counts: tuple[int, ...] | None  # validation rows per class (classifiers)
    replay_rows: int
    lr: float
    device: str
    rollbacks: int
    early_stops: int
    last_round: Mapping[str, Any]  # the latest round event's data

    @property
    def served_version(self) -> int:
        return self.served.version


def status_of(learner: OnlineLearner, previous: LearnerStatus | None = None) -> LearnerStatus:
    """The learner's status now; call it on the learner's writer thread only."""
    head, control, buffer = learner.head, learner.control, learner.buffer
    counts = learner.recorder.counts
    return LearnerStatus(
        spec=head.spec, optimizer=learner.optimizer, training=learner.training,
        state=control.state, stopping_reason=control.stopping_reason, step=head.step,
        samples_seen=head.samples_seen, served=learner.versions.served,
        head_version=learner.versions.head_version, best_version=learner.versions.best.version,
        best_metric=learner.stopper.state.best,
        rounds_since_improvement=learner.stopper.state.wait, validation_rows=buffer.size,
        validation_capacity=buffer.capacity, class_counts=_class_counts(learner, previous),
        replay_rows=learner.replay.size, lr=learner.lr_at(head.step), device=str(head.device),
        rollbacks=counts["rollback"], early_stops=counts["early_stop"],
        last_round=MappingProxyType(dict(learner.recorder.last_round)),
    )  # fmt: skip


def _class_counts(learner: OnlineLearner, previous: LearnerStatus | None) -> tuple[int, ...] | None:
    spec, buffer = learner.head.spec, learner.buffer
    classes = {"classification": spec.outputs, "binary": 2}.get(spec.task)
    if classes is None or buffer.size == 0:
        return None
    if previous is not None and previous.validation_rows == buffer.size and not buffer.changed:
        return previous.class_counts  # a bincount only after the buffer took rows
    return tuple(buffer.class_counts(classes))
