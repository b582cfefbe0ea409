"""Applies write-ahead-log records to a live model: the one code path for live work and replay.

Every change to a model is a record (a batch to learn, validation rows, a control command);
the model's worker applies records in log order through `Executor.run`, both while serving
and when a restart replays the log, so a replay cannot take a different path. After a record
that made a durable transition (and every `snapshot_every` records) the learner's whole state
is snapshotted and the log is truncated behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from sqlalchemy.exc import DBAPIError

from models.spec import NetworkSpec
from service import crashpoints
from service.errors import (
    BatchSkipped,
    GradualError,
    InvalidInput,
    StorageFull,
    StorageUnavailable,
    Unavailable,
    VersionNotWritten,
)
from service.kinds import RecordKind
from service.learning.checkpoint import Checkpoint
from service.learning.served import ServedModel, to_device
from service.learning.snapshot import capture, snapshot_pointers
from service.learning.training_config import TrainingConfig
from service.runtime.live import LiveModel, StreamGuard, Trained
from service.storage.db.tables import ModelRow
from service.storage.guard import StorageGuard, database_reachable
from service.storage.registry import Registry
from service.storage.wal import Record
from service.storage.weightstore import WeightStorage

log = logging.getLogger("gradual.commands")

APPLIES_ONCE = (
    "the change is logged and applies once (a batch resent with its batch_id answers duplicate)"
)


class Executor:
    def __init__(
        self, *, store: WeightStorage, registry: Registry, device: torch.device,
        snapshot_every: int, snapshot_interval_s: float,
        read: Callable[[ModelRow, int], Checkpoint], load: Callable[[ModelRow, int], ServedModel],
        storage: StorageGuard, compiled: bool = False,
    ) -> None:  # fmt: skip
        self.store = store
        self.registry = registry
        self.device = device
        self.snapshot_every = snapshot_every
        self.snapshot_interval_s = snapshot_interval_s
        self.read = read
        self.load = load
        self.compiled = compiled  # served versions' forward passes go through torch.compile
        self.storage = storage

    def run(
        self, live: LiveModel, record: Record, *, guard: StreamGuard | None = None,
        wait: bool = True,
    ) -> Any:  # fmt: skip
        recorder = live.recorder
        recorder.begin(record.seq, None if live.log is None else partial(live.log.sync, record.seq))
        before = recorder.transitions
        try:
            with self.storage.writing(), database_reachable(APPLIES_ONCE):
                return self._dispatch(live, record, guard)
        except Exception as exc:
            if record.kind == "fit" and not wait:  # nobody awaits it: the event log tells
                recorder.event("batch_failed", None, _failure(exc, record.args.get("batch_id")))
            raise
        finally:
            live.applied(record)
            live.publish()
            if self._snapshot_due(live, record, transitioned=recorder.transitions != before):
                self.snapshot_or_defer(live, record.seq)

    def snapshot_or_defer(self, live: LiveModel, seq: int) -> None:
        """A snapshot; in one process, one that meets a full or read-only disk, or history
        writes that cannot be written yet, waits for the next (the log keeps every record it
        would have held)."""
        try:
            with self.storage.writing(), database_reachable("the snapshot waits for the next"):
                self.snapshot(live, seq)
        except (StorageFull, StorageUnavailable, Unavailable) as exc:
            if live.fence is not None:  # scale-out: the snapshot is what acknowledges entries
                raise
            log.error("model %s: snapshot after record %d deferred: %s", live.name, seq, exc)

    def _snapshot_due(self, live: LiveModel, record: Record, *, transitioned: bool) -> bool:
        if record.seq - live.snapshot_seq >= self.snapshot_every:
            return True
        if not transitioned:
            return False
        # A batch's own versions and rollbacks are re-derived by replaying the log; a snapshot
        # after each costs more than the steps themselves. Without a log, or when a snapshot
        # is what acknowledges stream entries (scale-out), every transition snapshots.
        deferrable = record.kind == "fit" and live.log is not None and live.fence is None
        return not deferrable or time.monotonic() - live.snapshot_at >= self.snapshot_interval_s

    def snapshot(self, live: LiveModel, seq: int) -> None:
        """Writes the learner's whole state as of record `seq`; the log before it can go."""
        if live.log is not None:  # a snapshot never holds a record the log could still lose
            live.log.sync(seq)
        live.recorder.settle(seq)  # nor names a version whose row the disk could still lose
        state = capture(live.learner, seq=seq, unrecorded_ids=live.ledger.unrecorded())
        if live.fence is not None:
            self._commit_fenced(live, seq, state)
        else:
            self.store.write_snapshot(live.id, seq, state)
        crashpoints.hit("after_snapshot")
        live.snapshotted(seq, snapshot_pointers(state))
        if live.log is not None:
            live.log.truncate_through(seq)

    def _commit_fenced(self, live: LiveModel, seq: int, state: Checkpoint) -> None:
        """Scale-out: the snapshot and the stream position it includes commit together, and
        only while this replica's generation is the model's; then older snapshots go."""
        assert live.fence is not None
        file = self.store.write_fenced_snapshot(live.id, seq, live.fence, state)
        try:
            self.registry.commit_snapshot(
                live.id, file=file, seq=seq, applied_through=live.applied_through,
                fence=live.fence,
            )  # fmt: skip
        except Exception:
            self.store.remove(file.path)
            raise
        crashpoints.hit("after_db_commit_before_xack")
        self.store.prune_snapshots(live.id, keep={file.path, *live.kept_snapshots[-1:]})
        live.committed(file.path)

    def _dispatch(self, live: LiveModel, record: Record, guard: StreamGuard | None) -> Any:
        if record.kind == "fit":
            return self._fit(live, record, guard)
        handlers: dict[RecordKind, Callable[[LiveModel, Record], Any]] = {
            "validation": self._validation, "stop": self._stop, "resume": self._resume,
            "training": self._training, "checkpoint": self._checkpoint,
            "rollback": self._rollback, "promote": self._promote,
        }  # fmt: skip
        return handlers[record.kind](live, record)

    def _validation(self, live: LiveModel, record: Record) -> int:
        live.learner.add_validation(*self._tensors(record))
        return live.learner.buffer.size

    def _stop(self, live: LiveModel, _record: Record) -> None:
        if live.learner.control.state == "training":
            live.learner.stop()

    def _resume(self, live: LiveModel, _record: Record) -> None:
        if live.learner.control.state == "stopped":
            live.learner.resume("manual")

    def _training(self, live: LiveModel, record: Record) -> None:
        training = TrainingConfig.stored(record.args["training"])
        live.recorder.update_training(training.model_dump())
        live.learner.reconfigure(training)

    def _checkpoint(self, live: LiveModel, _record: Record) -> int:
        return live.learner.checkpoint()

    def _rollback(self, live: LiveModel, record: Record) -> None:
        version = int(record.args["version"])
        if live.learner.race is None:  # a lone model: a recent version is in memory
            state = live.learner.versions.resident_state(version)
            if state is not None:
                live.learner.reset_to(version, state)
                return
        live.recorder.wait_written()
        checkpoint = self.read(live.row, version)
        spec = checkpoint.meta.get("spec")  # a race's versions name their candidate's spec
        if spec is not None and NetworkSpec.stored(spec) != live.learner.spec:
            raise InvalidInput(
                f"version {version} was trained by another candidate of the race; promote it "
                "to serve it",
                field="version",
            )
        live.learner.reset_to(version, live.learner.head.state_from(checkpoint))

    def _promote(self, live: LiveModel, record: Record) -> None:
        version = int(record.args["version"])
        live.learner.promote(self._resident_or_load(live, version))

    def _fit(self, live: LiveModel, record: Record, guard: StreamGuard | None) -> Trained:
        learner, ledger = live.learner, live.ledger
        batch_id: str | None = record.args.get("batch_id")
        try:
            if guard is not None and guard.aborted:
                raise BatchSkipped("skipped: an earlier batch of this stream failed")
            x, y = self._tensors(record)
            report = learner.learn(x, y, record.arrays["inputs"], record.arrays["targets"])
        except Exception as exc:
            if guard is not None and guard.stop_on_error:
                guard.aborted = True
            if batch_id is not None and self._after_steps(exc):
                ledger.applied(batch_id)  # a round's write failed after its steps: never twice
            raise
        if batch_id is not None:
            ledger.applied(batch_id)
        head = learner.head
        return Trained(report, head.step, head.samples_seen, learner.versions.served.version)

    def _after_steps(self, exc: Exception) -> bool:
        """Whether `exc` is a write of the batch's round failing: its steps were taken."""
        written_late = isinstance(exc, DBAPIError | VersionNotWritten)
        return written_late or self.storage.classify(exc) is not None

    def _tensors(self, record: Record) -> tuple[torch.Tensor, torch.Tensor]:
        inputs: np.ndarray = record.arrays["inputs"]
        targets: np.ndarray = record.arrays["targets"]
        return to_device(inputs, self.device), to_device(targets, self.device)

    def _resident_or_load(self, live: LiveModel, version: int) -> ServedModel:
        served = live.learner.versions.served
        if served.version == version:
            return served
        state = live.learner.versions.resident_state(version)
        if state is not None:  # no disk read: a recent version is in device memory
            return ServedModel.from_state(
                live.spec, version, state.network, self.device, compiled=self.compiled
            )
        live.recorder.wait_written()
        return self.load(live.row, version)


def _failure(exc: Exception, batch_id: str | None) -> dict[str, Any]:
    field = exc.field if isinstance(exc, GradualError) else None
    return {"batch_id": batch_id, "error": type(exc).__name__, "message": str(exc), "field": field}
