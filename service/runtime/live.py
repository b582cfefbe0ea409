"""A model in memory, and what its writer hands back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from models.spec import NetworkSpec
from service.kinds import RecordKind
from service.learning.control import LearnReport
from service.learning.learner import OnlineLearner
from service.learning.ledger import BatchLedger
from service.learning.status import LearnerStatus, status_of
from service.runtime.pipeline import Pipeline
from service.runtime.recorder import ModelRecorder
from service.storage.db.tables import ModelRow
from service.storage.wal import Arrays, ModelLog, Record


@dataclass
class LiveModel:
    """A model's row (identity, spec, seed), the learner that owns its tensors, the ledger of
    applied batch ids, its write-ahead log, and the pipeline through which every change passes.
    `ingest` orders appends to the log with submissions to the pipeline."""

    row: ModelRow
    learner: OnlineLearner
    recorder: ModelRecorder  # the learner's, seen as the runtime drives it
    ledger: BatchLedger
    pipeline: Pipeline
    log: ModelLog | None
    seq: int  # the last record assigned (logged, or counted when there is no log)
    snapshot_seq: int
    snapshot_at: float = field(default_factory=time.monotonic)
    ingest: asyncio.Lock = field(default_factory=asyncio.Lock)
    inflight: dict[str, asyncio.Future[Trained]] = field(default_factory=dict)  # by batch id
    # Scale-out (Redis): the owner's fencing token (None on a follower or in one process), the
    # last stream entry applied, and the last one a committed snapshot includes.
    fence: int | None = None
    applied_through: str | None = None
    committed_through: str | None = None
    kept_snapshots: list[str] = field(default_factory=list)
    status: LearnerStatus = field(init=False)  # what readers see; replaced by `publish`

    def __post_init__(self) -> None:
        self.publish()

    # -- log positions and ownership: changed here only, in the order replay depends on --

    def append(
        self, kind: RecordKind, args: dict[str, Any], arrays: Arrays, *, sync: bool
    ) -> Record:
        """The next record, written to the log (and fsynced when `sync`) if there is one."""
        if self.log is None:
            return self.next_record(kind, args, arrays)
        record = (self.log.append if sync else self.log.write)(kind, args, arrays)
        self.seq = record.seq
        return record

    def next_record(
        self, kind: RecordKind, args: dict[str, Any], arrays: Arrays, *, source: str | None = None
    ) -> Record:
        """The next record, numbered here (no local log: a Redis entry, or no durability)."""
        self.seq += 1
        return Record(self.seq, kind, args, arrays, source=source)

    def applied(self, record: Record) -> None:
        """`record` went through the writer (applied or refused): its stream entry is done."""
        if record.source is not None:
            self.applied_through = record.source

    def resumed_from(self, applied_through: str | None) -> None:
        """Restored from a committed snapshot that includes the stream through this entry."""
        self.applied_through = self.committed_through = applied_through

    def snapshotted(self, seq: int, pinned: set[int]) -> None:
        """A recovery snapshot as of record `seq` is durable; it names versions `pinned`."""
        self.snapshot_seq, self.snapshot_at = seq, time.monotonic()
        self.recorder.pin(pinned)

    def committed(self, snapshot_path: str) -> None:
        """Scale-out: the snapshot at `snapshot_path` committed with the stream position."""
        self.committed_through = self.applied_through
        self.kept_snapshots = [snapshot_path]

    def own(self, fence: int) -> None:
        """Becomes the model's owner for generation `fence`; every write checks it."""
        self.fence = fence
        self.recorder.own(fence)

    # -- readers --------------------------------------------------------------------------

    def publish(self) -> None:
        """Replaces the status readers see (on the writer thread, after each job)."""
        self.status = status_of(self.learner, getattr(self, "status", None))

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def spec(self) -> NetworkSpec:
        return self.status.spec


@dataclass(frozen=True)
class Trained:
    """A batch's report with the counters and served version right after it."""

    report: LearnReport
    step: int
    samples_seen: int
    version: int


@dataclass(frozen=True)
class FitOutcome:
    """A trained batch, or a duplicate's acknowledgement, or a queued position. A resend of a
    batch still queued is a duplicate carrying the first attempt's outcome."""

    trained: Trained | None
    duplicate: bool = False
    queued: int | None = None


@dataclass
class StreamGuard:
    """Shared by one stream's batches: once a batch fails with `stop_on_error`, the rest skip."""

    stop_on_error: bool
    aborted: bool = False
