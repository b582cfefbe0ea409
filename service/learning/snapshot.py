"""Recovery snapshots: a learner's whole state after one log record, and its restoration.

A version holds what a network knows; a snapshot holds everything the *next* step depends on:
the head (weights, optimizer, generator, counters), the validation and replay buffers slot for
slot, the replay buffer's generator, the controller's state (the learning-rate schedule's
included), the loss accumulated since the last round, the training section in force, the
served/head/best pointers, the batch ids not yet recorded with a version, and a race's
candidates (`race_state`). Replaying the
log after a snapshot therefore reproduces the learner bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.learning.checkpoint import Checkpoint
from service.learning.control import Control
from service.learning.learner import OnlineLearner
from service.learning.race.snapshot import capture_race
from service.learning.replay import ReplayState
from service.learning.training_config import TrainingConfig


@dataclass(frozen=True)
class VersionPointers:
    served: int
    head: int
    best: int


def capture(learner: OnlineLearner, *, seq: int, unrecorded_ids: list[str]) -> Checkpoint:
    head = learner.head.checkpoint()
    x, y, next_slot = learner.buffer.ring()
    replay = learner.replay.state()
    meta = head.meta | {
        "seq": seq,
        "control": learner.control_state(),
        "round_losses": learner.round_losses,
        "training": learner.training.model_dump(),
        "buffer_next": next_slot,
        "replay_next": replay.next_slot,
        "pointers": {
            "served": learner.versions.served.version, "head": learner.versions.head_version,
            "best": learner.versions.best.version,
        },
        "unrecorded_ids": unrecorded_ids,
    }  # fmt: skip
    extra = {"buffer_x": x, "buffer_y": y, "replay_x": replay.x, "replay_y": replay.y}
    if learner.race is not None:
        meta["race"], race_tensors = capture_race(learner.race)
        extra |= race_tensors
    return Checkpoint(
        head.network, head.optimizer, head.rng, meta, extra | {"replay_rng": replay.rng}
    )


def snapshot_pointers(snapshot: Checkpoint) -> set[int]:
    """The versions a snapshot names: restoring it reads their files, so none may be pruned."""
    return set(snapshot.meta["pointers"].values())


@dataclass(frozen=True)
class Restored:
    seq: int
    control: Control
    training: TrainingConfig
    pointers: VersionPointers
    unrecorded_ids: list[str]


def describe(snapshot: Checkpoint) -> Restored:
    meta: dict[str, Any] = snapshot.meta
    return Restored(
        seq=int(meta["seq"]),
        control=Control.from_dict(meta["control"]),
        training=TrainingConfig.stored(meta["training"]),
        pointers=VersionPointers(**meta["pointers"]),
        unrecorded_ids=list(meta["unrecorded_ids"]),
    )


def restore_into(learner: OnlineLearner, snapshot: Checkpoint) -> None:
    """Loads the head, the buffers, the replay generator and the round accumulator (the rest
    is constructor state)."""
    learner.head.load_checkpoint(snapshot)
    learner.buffer.load_ring(
        snapshot.extra["buffer_x"], snapshot.extra["buffer_y"], int(snapshot.meta["buffer_next"])
    )
    if "replay_rng" in snapshot.extra:  # snapshots from before replay existed have none
        extra = snapshot.extra
        learner.replay.load(
            ReplayState(
                extra["replay_x"], extra["replay_y"], int(snapshot.meta["replay_next"]),
                extra["replay_rng"],
            )
        )  # fmt: skip
    learner.round_losses = [(float(v), int(n)) for v, n in snapshot.meta["round_losses"]]
