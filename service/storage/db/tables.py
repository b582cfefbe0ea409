"""ORM rows. Named `*Row` so they never clash with the `models` package of networks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores no zone and returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, datetime: UTCDateTime}


class ModelRow(Base):
    """A model and its pointers: which version is served, which the training head started from."""

    __tablename__ = "models"
    # ids are never reused: weight directories are named by id
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    task: Mapped[str] = mapped_column(String(32))
    spec: Mapped[dict[str, Any]]
    optimizer: Mapped[dict[str, Any]]
    training: Mapped[dict[str, Any]]
    seed: Mapped[int]
    state: Mapped[str] = mapped_column(String(16), default="training")
    stopping_reason: Mapped[str | None] = mapped_column(String(32))
    served_version: Mapped[int]
    head_version: Mapped[int]
    best_version: Mapped[int | None]
    # The learning controller's plain-data state (stopper, counters), written on transitions.
    control: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Scale-out: the ownership epoch (the owner's lease fencing token); every write of an
    # owner compares it, so a replica whose lease lapsed commits nothing.
    generation: Mapped[int] = mapped_column(default=0)
    # Scale-out: the committed recovery snapshot and the last stream entry its state includes.
    snapshot_path: Mapped[str | None] = mapped_column(String(255))
    snapshot_sha256: Mapped[str | None] = mapped_column(String(64))
    snapshot_seq: Mapped[int | None] = mapped_column(BigInteger)
    applied_through: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class VersionRow(Base):
    """An immutable checkpoint: weights, optimizer state and counters at one step."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "number", name="uq_versions_model_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    number: Mapped[int]
    parent: Mapped[int | None]
    step: Mapped[int] = mapped_column(BigInteger)
    samples_seen: Mapped[int] = mapped_column(BigInteger)
    metrics: Mapped[dict[str, Any]]
    reason: Mapped[str] = mapped_column(String(32))
    weights_path: Mapped[str] = mapped_column(String(255))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    weights_bytes: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="ready")
    # The last write-ahead-log record this version's state includes (replay starts after it).
    applied_seq: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventRow(Base):
    """Something that happened to a model, with the numbers that made it happen."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_model_id_id", "model_id", "id"),
        Index("ix_events_model_id_seq", "model_id", "seq"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[int | None]
    # The log record that caused it: a replay after a crash re-derives, never re-inserts, it.
    seq: Mapped[int | None] = mapped_column(BigInteger)
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AppliedBatchRow(Base):
    """A batch id whose effect is in the version it was recorded with (idempotent ingest)."""

    __tablename__ = "applied_batches"
    __table_args__ = (UniqueConstraint("model_id", "batch_id", name="uq_applied_batches_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    batch_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
