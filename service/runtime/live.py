"""A model in memory, and what its writer hands back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from models.spec import NetworkSpec
from service.learning.learner import LearnReport, OnlineLearner
from service.learning.ledger import BatchLedger
from service.runtime.pipeline import Pipeline
from service.storage.db.tables import ModelRow
from service.storage.wal import ModelLog


@dataclass
class LiveModel:
    """A model's row (identity, spec, seed), the learner that owns its tensors, the ledger of
    applied batch ids, its write-ahead log, and the pipeline through which every change passes.
    `ingest` orders appends to the log with submissions to the pipeline."""

    row: ModelRow
    learner: OnlineLearner
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

    @property
    def id(self) -> int:
        return self.row.id

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def spec(self) -> NetworkSpec:
        return self.learner.head.spec


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
