"""Writes what a model's learner decides: versions (file first, then row), pointers, events.

Each write carries the write-ahead-log record that caused it (`seq`). While a restart replays
the log, a record's writes may already have committed before the crash: the recorder then
finds them (by seq) and does not write them again, so replay re-derives history exactly once.

Where replay can re-derive them (a record in a local log, one writer, not replaying), writes
go behind the answer (`WriteBehind`): the learner's decisions, and the version numbers they
name, are made here at once; the files and rows follow in order on the history thread.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from service import crashpoints
from service.errors import VersionNotWritten
from service.kinds import EventKind, MoveKind
from service.learning.checkpoint import Checkpoint
from service.learning.head import HeadState, TrainingHead
from service.learning.ledger import BatchLedger
from service.learning.recording import Pointers
from service.runtime.writebehind import Write, WriteBehind
from service.storage.changes import NewVersion
from service.storage.registry import Registry
from service.storage.weightstore import WeightStorage

log = logging.getLogger("gradual.recorder")
T = TypeVar("T")


class ModelRecorder:
    """One model's link to the registry and the weight store; called from its writer thread."""

    def __init__(
        self, registry: Registry, store: WeightStorage, model_id: int, ledger: BatchLedger,
        *, notify: Callable[[], None] = lambda: None, database_wait_s: float = 30.0,
        behind: WriteBehind | None = None,
    ) -> None:  # fmt: skip
        self.registry = registry
        self.store = store
        self.model_id = model_id
        self.ledger = ledger
        self.notify = notify  # wakes event-stream readers
        self.database_wait_s = database_wait_s
        self.counts: Counter[EventKind] = Counter()  # events by kind since start (for /metrics)
        self.last_round: dict[str, Any] = {}
        self.seq: int | None = None  # the log record being applied
        self.replay_through = 0  # records up to here may have committed writes before a crash
        self.transitions = 0  # durable changes so far: the hub snapshots after a job makes one
        self.fence: int | None = None  # scale-out: the owner's generation, checked by each write
        self.pinned: set[int] = set()  # versions the latest recovery snapshot names (unpruned)
        # Returns once the record being applied is on disk: nothing derived from a batch may
        # commit before the batch itself is durable (its log record is fsynced as it trains).
        self.durable: Callable[[], None] = lambda: None
        # Whether the record being applied is in a local write-ahead log that a restart
        # replays: its versions are then re-derived after a machine crash, and their rows
        # commit without waiting for the disk until `settle` (before every recovery snapshot).
        self.replayable = False
        self.unsettled = False  # a version row committed since the last `settle`
        self.ready_versions: int | None = None  # at most this many versions hold a file
        self.behind = behind  # where deferrable writes queue (None: every write waits)
        self._last_number: int | None = None  # the newest version's number, once known
        self.unwritten: set[int] = set()  # versions numbered whose row has not committed yet

    # -- where the writer is: set only through these, by the executor and the assembler ----

    def begin(self, seq: int, durable: Callable[[], None] | None) -> None:
        """Record `seq` is being applied; `durable` returns once it is on disk."""
        self.seq = seq
        self.replayable = durable is not None and self.fence is None
        if durable is not None:
            self.durable = durable

    def replaying_through(self, seq: int) -> None:
        """Records up to `seq` may have committed their writes before a crash."""
        self.replay_through = seq

    def pin(self, versions: set[int]) -> None:
        """The latest recovery snapshot names these versions: pruning keeps their files."""
        self.pinned = versions

    def own(self, fence: int) -> None:
        self.fence = fence
        self.ready_versions = None  # another owner may have made versions meanwhile
        self._last_number = None

    def checkpoint(
        self, head: TrainingHead, *, reason: str, metrics: dict[str, Any], parent: int | None,
        pointers: Pointers, state: HeadState | None = None,
    ) -> int:  # fmt: skip
        """Writes and fsyncs the file, then commits the row pointing at it; returns its number.
        `state`: the head's state, already copied by the caller.

        The batch ids applied since the last checkpoint are recorded in the same transaction:
        this version's weights hold their effect.
        """
        if self._deferring():
            return self._checkpoint_behind(
                head, reason=reason, metrics=metrics, parent=parent, pointers=pointers,
                state=state,
            )  # fmt: skip
        return self._retrying(
            partial(
                self._checkpoint, head, reason=reason, metrics=metrics, parent=parent,
                pointers=pointers, state=state,
            )
        )  # fmt: skip

    def _checkpoint_behind(
        self, head: TrainingHead, *, reason: str, metrics: dict[str, Any], parent: int | None,
        pointers: Pointers, state: HeadState | None,
    ) -> int:  # fmt: skip
        """The version's number now; its file and row behind the answer, in order."""
        batch_ids = self.ledger.unrecorded()
        self.ledger.recorded(batch_ids)  # by the time anything reads the rows, they hold them
        self.transitions += 1
        number = self._next_number()
        pointers = replace(pointers, batch_ids=tuple(batch_ids), seq=self.seq)
        checkpoint = head.checkpoint({"control": pointers.control}, state=state)
        new = partial(
            NewVersion, step=head.step, samples_seen=head.samples_seen, metrics=metrics,
            reason=reason, parent=parent, applied_seq=self.seq,
        )  # fmt: skip
        event_data = {"step": head.step, **metrics}
        durable = self.durable
        self.unsettled = True
        self.counts["checkpoint"] += 1

        def write(retried: bool) -> None:
            durable()
            if retried and self.registry.queries.has_version(self.model_id, number):
                return  # its commit landed before the error
            self._store_version(
                checkpoint, new, pointers, event_data, wait_for_disk=False, number=number
            )
            self.unwritten.discard(number)
            self.notify()

        self.unwritten.add(number)
        self._behind(write, version=True)
        return number

    def _next_number(self) -> int:
        if self._last_number is None:
            self._last_number = self.registry.queries.latest_version(self.model_id)
        self._last_number += 1
        return self._last_number

    def _checkpoint(
        self, head: TrainingHead, *, reason: str, metrics: dict[str, Any], parent: int | None,
        pointers: Pointers, state: HeadState | None,
    ) -> int:  # fmt: skip
        batch_ids = self.ledger.unrecorded()
        self.transitions += 1
        self.durable()
        if self._replaying():
            existing = self.registry.queries.version_for_seq(self.model_id, seq=self._seq())
            if existing is not None:
                self.ledger.recorded(batch_ids)
                self._last_number = None  # replay may re-derive a version here or not
                return existing
            if self.registry.queries.any_recorded(self.model_id, batch_ids):
                raise VersionNotWritten(self._seq())
        pointers = replace(pointers, batch_ids=tuple(batch_ids), seq=self.seq)
        new = partial(
            NewVersion, step=head.step, samples_seen=head.samples_seen, metrics=metrics,
            reason=reason, parent=parent, applied_seq=self.seq,
        )  # fmt: skip
        number = self._store_version(
            head.checkpoint({"control": pointers.control}, state=state), new, pointers,
            {"step": head.step, **metrics}, wait_for_disk=not self.replayable, fence=self.fence,
        )  # fmt: skip
        self.unsettled = self.unsettled or self.replayable
        self.ledger.recorded(batch_ids)
        self._written("checkpoint")
        self._last_number = number
        return number

    def _store_version(
        self, checkpoint: Checkpoint, new: Callable[..., NewVersion], pointers: Pointers,
        event_data: dict[str, Any], *, wait_for_disk: bool, fence: int | None = None,
        number: int | None = None,
    ) -> int:  # fmt: skip
        """The version's file, then its row (`new(file=...)`); returns its number."""
        file = self.store.write(self.model_id, checkpoint)
        try:
            row = self.registry.add_version(
                self.model_id, new(file=file), pointers=pointers, event_data=event_data,
                fence=fence, wait_for_disk=wait_for_disk, number=number,
            )  # fmt: skip
        except Exception:
            self.store.remove(file.path)  # its row never committed: the file would be an orphan
            raise
        if self.ready_versions is not None:
            self.ready_versions += 1
        crashpoints.hit("after_db_commit")
        return row.number

    def wait_written(self, timeout: float | None = None) -> None:
        """Waits until the queued writes are done, or stopped on a failure, or `timeout`
        seconds (a reader's wait: it then reads what is there)."""
        if self.behind is not None:
            self.behind.idle(timeout)

    def catch_up(self) -> None:
        """Returns once every queued write is done (tried again here after a failure)."""
        if self.behind is not None:
            self.behind.flush()

    def settle(self, seq: int) -> None:
        """Returns once the version rows committed so far are on disk: before a recovery
        snapshot after record `seq` names them (the log before it is then cut)."""
        self.catch_up()
        if self.unsettled:
            self._retrying(partial(self.registry.settle, self.model_id, seq=seq))
            self.unsettled = False

    def prune(self, *, keep: int, protected: set[int]) -> None:
        """Version rows stay forever; files beyond the newest `keep` go (served and best stay).
        Asks the registry only when more than `keep` versions may hold a file."""
        if self._deferring():
            self._behind(lambda _retried: self._prune(keep, protected))
        else:
            self._retrying(partial(self._prune, keep, protected))

    def _prune(self, keep: int, protected: set[int]) -> None:
        if self.ready_versions is not None and self.ready_versions <= keep:
            return
        protected = protected | self.pinned
        archived = self.registry.archive_old_versions(self.model_id, keep=keep, protected=protected)
        self.ready_versions = archived.ready
        for path in archived.paths:
            self.store.remove(path)

    def move(
        self, kind: MoveKind, version: int | None, pointers: Pointers, data: dict[str, Any]
    ) -> None:
        if not self._deferring():
            self._retrying(partial(self._move, kind, version, pointers, data))
            return
        self.transitions += 1
        self.counts[kind] += 1
        seq, durable = self._seq(), self.durable
        pointers = replace(pointers, seq=seq)
        data = {"step": pointers.control.get("step"), **data}

        def write(retried: bool) -> None:
            durable()
            if retried and self.registry.queries.event_recorded(self.model_id, seq=seq, kind=kind):
                return
            self.registry.move_pointers(
                self.model_id, kind=kind, version=version, pointers=pointers, data=data
            )
            self.notify()

        self._behind(write)

    def _move(
        self, kind: MoveKind, version: int | None, pointers: Pointers, data: dict[str, Any]
    ) -> None:
        self.transitions += 1
        if self._already(kind):
            return
        self.durable()
        self.registry.move_pointers(
            self.model_id, kind=kind, version=version, pointers=replace(pointers, seq=self.seq),
            data={"step": pointers.control.get("step"), **data}, fence=self.fence,
        )  # fmt: skip
        self._written(kind)

    def event(self, kind: EventKind, version: int | None, data: dict[str, Any]) -> None:
        if not self._deferring():
            self._retrying(partial(self._event, kind, version, data))
            return
        if kind == "round":
            self.last_round = data
        self.counts[kind] += 1
        seq, durable = self._seq(), self.durable

        def write(retried: bool) -> None:
            durable()
            if retried and self.registry.queries.event_recorded(self.model_id, seq=seq, kind=kind):
                return
            self.registry.add_event(self.model_id, kind, version, data, seq=seq)
            self.notify()

        self._behind(write)

    def _event(self, kind: EventKind, version: int | None, data: dict[str, Any]) -> None:
        if kind == "round":
            self.last_round = data
        if not self._already(kind):
            self.durable()
            self.registry.add_event(
                self.model_id, kind, version, data, seq=self.seq, fence=self.fence
            )
            self._written(kind)

    def update_training(self, training: dict[str, Any]) -> None:
        self.catch_up()  # a command: rare, and in order with what came before
        self._retrying(partial(self._update_training, training))

    def _update_training(self, training: dict[str, Any]) -> None:
        self.transitions += 1
        if not self._already("training_updated"):
            self.durable()
            self.registry.update_training(self.model_id, training, seq=self.seq, fence=self.fence)

    def _retrying(self, write: Callable[[], T]) -> T:
        """Runs a write; while the database server is unreachable, waits and tries again for
        up to `database_wait_s` (the batch is in the log meanwhile). A write whose commit may
        have landed before the connection broke is looked up first, as a replay does."""

        def attempt(retried: bool) -> T:
            if retried and self.seq is not None:
                self.replaying_through(max(self.replay_through, self.seq))
            return write()

        return self._patiently(attempt, False)

    def _behind(self, write: Write, *, version: bool = False) -> None:
        """Queues `write` on the history thread, where it too waits out a database outage."""
        assert self.behind is not None
        self.behind.add(partial(self._patiently, write), version=version)

    def _patiently(self, write: Callable[[bool], T], retried: bool) -> T:
        """`write(retried)`, tried again with `retried` True while the database server stays
        unreachable, for up to `database_wait_s`."""
        deadline, delay = time.monotonic() + self.database_wait_s, 0.05
        while True:
            try:
                return write(retried)
            except (OperationalError, InterfaceError) as exc:
                if _local(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("model %d: database unreachable, retrying: %s", self.model_id, exc)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            retried = True

    def _written(self, kind: EventKind) -> None:
        self.counts[kind] += 1
        self.notify()

    def _replaying(self) -> bool:
        return self.seq is not None and self.seq <= self.replay_through

    def _deferring(self) -> bool:
        """Whether this record's writes may go behind the answer: replay re-derives them."""
        return self.behind is not None and self.replayable and not self._replaying()

    def _already(self, kind: EventKind) -> bool:
        return self._replaying() and self.registry.queries.event_recorded(
            self.model_id, seq=self._seq(), kind=kind
        )

    def _seq(self) -> int:
        assert self.seq is not None
        return self.seq


def _local(exc: DBAPIError) -> bool:
    """SQLite's errors (a full or read-only disk): waiting would not help, they are storage."""
    return hasattr(exc.orig, "sqlite_errorcode")
