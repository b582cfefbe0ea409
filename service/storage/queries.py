"""Read-only queries of the registry: versions, events, the batch ids versions recorded.

Used by the history routes, by replay (to find what a crashed run already committed) and by
the consistency check; every write goes through `Registry`."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from service.errors import VersionNotFound
from service.kinds import EventKind
from service.storage.db.tables import AppliedBatchRow, EventRow, ModelRow, VersionRow


class Queries:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def applied_batch_ids(self, model_id: int, *, limit: int, through_seq: int) -> list[str]:
        """The newest `limit` batch ids recorded by versions whose state a snapshot at log
        record `through_seq` includes, oldest first. Ids recorded later are left out: a replay
        must apply their batches again (its checkpoints then find those versions)."""
        included = or_(VersionRow.applied_seq.is_(None), VersionRow.applied_seq <= through_seq)
        with self._sessions() as session:
            ids = session.scalars(
                select(AppliedBatchRow.batch_id)
                .join(
                    VersionRow,
                    (VersionRow.model_id == AppliedBatchRow.model_id)
                    & (VersionRow.number == AppliedBatchRow.version),
                )
                .where(AppliedBatchRow.model_id == model_id, included)
                .order_by(AppliedBatchRow.id.desc())
                .limit(limit)
            ).all()
        return list(reversed(ids))

    def any_recorded(self, model_id: int, batch_ids: Sequence[str]) -> bool:
        """Whether a version already recorded one of these batch ids."""
        if not batch_ids:
            return False
        with self._sessions() as session:
            found = session.scalar(
                select(AppliedBatchRow.id)
                .where(AppliedBatchRow.model_id == model_id)
                .where(AppliedBatchRow.batch_id.in_(list(batch_ids)))
                .limit(1)
            )
        return found is not None

    def versions(self, model_id: int) -> Sequence[VersionRow]:
        with self._sessions() as session:
            return session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model_id)
                .order_by(VersionRow.number)
            ).all()

    def latest_version(self, model_id: int) -> int:
        """The newest version's number (every model has version 1)."""
        with self._sessions() as session:
            latest = session.scalar(
                select(func.max(VersionRow.number)).where(VersionRow.model_id == model_id)
            )
        return int(latest or 0)

    def has_version(self, model_id: int, number: int) -> bool:
        with self._sessions() as session:
            found = session.scalar(
                select(VersionRow.id).where(
                    VersionRow.model_id == model_id, VersionRow.number == number
                )
            )
        return found is not None

    def version(self, model: ModelRow, number: int) -> VersionRow:
        with self._sessions() as session:
            row = session.scalar(
                select(VersionRow).where(
                    VersionRow.model_id == model.id, VersionRow.number == number
                )
            )
            if row is None:
                raise VersionNotFound(model.name, number)
            return row

    def event_recorded(self, model_id: int, *, seq: int, kind: EventKind) -> bool:
        """Whether the log record `seq` already caused a `kind` event (replay idempotency)."""
        with self._sessions() as session:
            found = session.scalar(
                select(EventRow.id).where(
                    EventRow.model_id == model_id, EventRow.seq == seq, EventRow.kind == kind
                )
            )
        return found is not None

    def version_for_seq(self, model_id: int, *, seq: int) -> int | None:
        """The version a checkpoint at log record `seq` made, if it committed before a crash."""
        with self._sessions() as session:
            return session.scalar(
                select(VersionRow.number).where(
                    VersionRow.model_id == model_id, VersionRow.applied_seq == seq
                )
            )

    def events(
        self, model_id: int, *, since: int = 0, kinds: Sequence[EventKind] | None = None,
        limit: int = 1000,
    ) -> Sequence[EventRow]:  # fmt: skip
        query = select(EventRow).where(EventRow.model_id == model_id, EventRow.id > since)
        if kinds is not None:
            query = query.where(EventRow.kind.in_(kinds))
        with self._sessions() as session:
            return session.scalars(query.order_by(EventRow.id).limit(limit)).all()

    def stored_versions(self) -> list[tuple[str, VersionRow]]:
        """Every version row with its model's name, ordered by model and number."""
        with self._sessions() as session:
            rows = session.execute(
                select(ModelRow.name, VersionRow)
                .join(VersionRow, VersionRow.model_id == ModelRow.id)
                .order_by(ModelRow.id, VersionRow.number)
            ).all()
        return [(name, version) for name, version in rows]

    def model_ids(self) -> set[int]:
        with self._sessions() as session:
            return set(session.scalars(select(ModelRow.id)).all())
