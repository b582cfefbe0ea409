"""The model registry: every model, version and event, in SQL. No torch here.

Versions are immutable rows; the served/head/best pointers on a model move in one
transaction together with the event that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.errors import Fenced, HistoryDiverged, ModelExists, ModelNotFound
from service.kinds import EventKind, MoveKind
from service.learning.recording import Pointers
from service.storage.changes import Archived, NewModel, NewVersion
from service.storage.db.tables import AppliedBatchRow, EventRow, ModelRow, VersionRow
from service.storage.queries import Queries
from service.storage.weights import StoredFile

Fence = int | None  # an owner's generation; None: one process, nothing to compare

MAX_VERSION_RETRIES = 20  # SQLite has no row lock: concurrent writers may collide a few times


class Registry:
    """Every write of models, versions, pointers, events and snapshots; reads in `queries`."""

    def __init__(
        self, sessions: sessionmaker[Session], progress: sessionmaker[Session] | None = None
    ) -> None:
        self._sessions = sessions
        # Progress events (rounds, lr changes, drift) are re-derived by replay: their commits
        # need not wait for the disk (nor versions' that the log re-derives: see `settle`).
        self._progress = progress or sessions
        self.queries = Queries(sessions)

    def ping(self) -> None:
        with self._sessions() as session:
            session.execute(select(1))

    def create_model(
        self, model: NewModel, first: Callable[[int], NewVersion]
    ) -> tuple[ModelRow, VersionRow]:
        """Inserts the model with version 1, served and head.

        `first` gets the new model's id and writes version 1's file; it runs inside the
        transaction, so the file is on disk before the row that points at it commits.
        """
        try:
            with self._sessions.begin() as session:
                row = ModelRow(
                    name=model.name,
                    task=model.task,
                    spec=model.spec,
                    optimizer=model.optimizer,
                    training=model.training,
                    seed=model.seed,
                    served_version=1,
                    head_version=1,
                )
                session.add(row)
                session.flush()
                version = _version_row(row.id, 1, first(row.id))
                session.add(version)
                _event(session, row.id, "created", 1, {"spec": model.spec})
            return row, version
        except IntegrityError as exc:
            raise ModelExists(model.name) from exc

    def model(self, name: str) -> ModelRow:
        with self._sessions() as session:
            row = session.scalar(select(ModelRow).where(ModelRow.name == name))
            if row is None:
                raise ModelNotFound(name)
            return row

    def models(self) -> Sequence[ModelRow]:
        with self._sessions() as session:
            return session.scalars(select(ModelRow).order_by(ModelRow.name)).all()

    def delete_model(self, model_id: int) -> None:
        with self._sessions.begin() as session:
            row = session.get(ModelRow, model_id)
            if row is not None:
                session.delete(row)

    def add_version(
        self, model_id: int, new: NewVersion, *, pointers: Pointers, event_data: dict[str, Any],
        fence: Fence = None, wait_for_disk: bool = True, number: int | None = None,
    ) -> VersionRow:  # fmt: skip
        """Allocates the next number (a unique constraint plus retry keeps replicas apart),
        or takes `number`, which its one writer chose: it must be the next.

        `wait_for_disk=False`: the commit does not wait for the disk (for a version that
        replaying the write-ahead log re-derives); `settle` makes it durable later."""
        sessions = self._sessions if wait_for_disk else self._progress
        for attempt in range(MAX_VERSION_RETRIES):
            try:
                return self._insert_version(
                    sessions, model_id, new, pointers, event_data, fence, number
                )
            except IntegrityError:
                if number is not None or attempt == MAX_VERSION_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _insert_version(
        self, sessions: sessionmaker[Session], model_id: int, new: NewVersion,
        pointers: Pointers, event_data: dict[str, Any], fence: Fence, chosen: int | None,
    ) -> VersionRow:  # fmt: skip
        with sessions.begin() as session:
            model = _locked_model(session, model_id, fence)  # first: writers queue on the row
            latest = session.scalar(
                select(func.max(VersionRow.number)).where(VersionRow.model_id == model_id)
            )
            number = (latest or 0) + 1
            if chosen is not None and chosen != number:
                raise HistoryDiverged(
                    f"model {model_id}: version {chosen} was chosen, {number} is the next"
                )
            version = _version_row(model_id, number, new)
            session.add(version)
            model.head_version = number
            if pointers.best:
                model.best_version = number
            if pointers.serve:
                model.served_version = number
            model.control = pointers.control
            session.add_all(
                AppliedBatchRow(model_id=model_id, batch_id=batch_id, version=number)
                for batch_id in pointers.batch_ids
            )
            data = {"reason": new.reason, **event_data}
            _event(session, model_id, "checkpoint", number, data, seq=pointers.seq)
            if pointers.serve:
                promoted = {"reason": new.reason, "step": new.step}
                _event(session, model_id, "promote", number, promoted, seq=pointers.seq)
        return version

    def settle(self, model_id: int, *, seq: int) -> None:
        """Returns once every earlier commit is on disk (one that waits flushes the database's
        log up to itself). It records `seq`, the log record a recovery snapshot is about to
        include: SQLite skips a write that changes nothing."""
        with self._sessions.begin() as session:
            session.execute(
                update(ModelRow).where(ModelRow.id == model_id).values(snapshot_seq=seq)
            )

    def archive_old_versions(self, model_id: int, *, keep: int, protected: set[int]) -> Archived:
        """Marks ready versions beyond the newest `keep` archived; returns their files to delete
        and how many ready versions remain."""
        with self._sessions.begin() as session:
            beyond = session.execute(  # columns, not rows: this runs after every new version
                select(VersionRow.id, VersionRow.number, VersionRow.weights_path)
                .where(VersionRow.model_id == model_id, VersionRow.status == "ready")
                .order_by(VersionRow.number.desc())
                .offset(keep)
            ).all()
            doomed = [row for row in beyond if row.number not in protected]
            if doomed:
                session.execute(
                    update(VersionRow)
                    .where(VersionRow.id.in_([row.id for row in doomed]))
                    .values(status="archived")
                )
            ready = keep + len(beyond) - len(doomed) if beyond else _ready(session, model_id)
            return Archived([row.weights_path for row in doomed], ready)

    def move_pointers(
        self, model_id: int, *, kind: MoveKind, version: int | None, pointers: Pointers,
        data: dict[str, Any], fence: Fence = None,
    ) -> None:  # fmt: skip
        """Moves served/head/best pointers and the control state, with an event saying why."""
        with self._sessions.begin() as session:
            model = _locked_model(session, model_id, fence)
            if pointers.serve and version is not None:
                model.served_version = version
            if pointers.head is not None:
                model.head_version = pointers.head
            if pointers.best and version is not None:
                model.best_version = version
            model.state = pointers.control.get("state", model.state)
            model.stopping_reason = pointers.control.get("stopping_reason")
            model.control = pointers.control
            _event(session, model_id, kind, version, data, seq=pointers.seq)

    def add_event(
        self, model_id: int, kind: EventKind, version: int | None, data: dict[str, Any],
        *, seq: int | None = None, fence: Fence = None,
    ) -> None:  # fmt: skip
        with self._progress.begin() as session:
            if fence is not None:
                _locked_model(session, model_id, fence)
            _event(session, model_id, kind, version, data, seq=seq)

    def update_training(
        self, model_id: int, training: dict[str, Any], *, seq: int | None = None,
        fence: Fence = None,
    ) -> None:  # fmt: skip
        with self._sessions.begin() as session:
            model = _locked_model(session, model_id, fence)
            model.training = training
            data = {"training": training}
            _event(session, model_id, "training_updated", None, data, seq=seq)

    def claim(self, model_id: int, fence: int) -> bool:
        """Makes `fence` the model's generation unless a newer owner already has: from now on
        every write of an older owner matches no row and fails."""
        with self._sessions.begin() as session:
            result = session.execute(
                update(ModelRow)
                .where(ModelRow.id == model_id, ModelRow.generation < fence)
                .values(generation=fence)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def commit_snapshot(
        self, model_id: int, *, file: StoredFile, seq: int, applied_through: str | None,
        fence: Fence,
    ) -> None:  # fmt: skip
        """Points the model at a recovery snapshot and the stream position it includes, in one
        transaction that an owner whose lease lapsed cannot commit."""
        with self._sessions.begin() as session:
            model = _locked_model(session, model_id, fence)
            model.snapshot_path = file.path
            model.snapshot_sha256 = file.sha256
            model.snapshot_seq = seq
            model.applied_through = applied_through

    def mark_version(self, version_id: int, status: str) -> None:
        """Marks a version whose file is missing or corrupt: refused (410) like an archived one."""
        with self._sessions.begin() as session:
            row = session.get(VersionRow, version_id)
            if row is not None:
                row.status = status


def _locked_model(session: Session, model_id: int, fence: Fence = None) -> ModelRow:
    model = session.get(ModelRow, model_id, with_for_update=True)
    if model is None:
        raise ModelNotFound(str(model_id))
    if fence is not None and model.generation != fence:
        raise Fenced(f"model {model.name}: generation {model.generation} is not ours ({fence})")
    return model


def _ready(session: Session, model_id: int) -> int:
    query = select(func.count()).select_from(VersionRow)
    found = session.scalar(
        query.where(VersionRow.model_id == model_id, VersionRow.status == "ready")
    )
    return int(found or 0)


def _version_row(model_id: int, number: int, new: NewVersion) -> VersionRow:
    return VersionRow(
        model_id=model_id,
        number=number,
        parent=new.parent,
        step=new.step,
        samples_seen=new.samples_seen,
        metrics=new.metrics,
        reason=new.reason,
        weights_path=new.file.path,
        weights_sha256=new.file.sha256,
        weights_bytes=new.file.size,
        applied_seq=new.applied_seq,
    )


def _event(
    session: Session, model_id: int, kind: EventKind, version: int | None, data: dict[str, Any],
    *, seq: int | None = None,
) -> None:  # fmt: skip
    session.add(EventRow(model_id=model_id, kind=kind, version=version, data=data, seq=seq))
