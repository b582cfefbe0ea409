"""The model registry: every model, version and event, in SQL. No torch here.

Versions are immutable rows; the served/head/best pointers on a model move in one
transaction together with the event that says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from service.db.tables import EventRow, ModelRow, VersionRow
from service.errors import ModelExists, ModelNotFound, VersionNotFound
from service.weights import StoredFile

MAX_VERSION_RETRIES = 5


@dataclass(frozen=True)
class NewVersion:
    """What a checkpoint adds: counters, metrics and the file already written and fsynced."""

    step: int
    samples_seen: int
    metrics: dict[str, Any]
    reason: str
    parent: int | None
    file: StoredFile


@dataclass(frozen=True)
class NewModel:
    name: str
    task: str
    spec: dict[str, Any]
    optimizer: dict[str, Any]
    training: dict[str, Any]
    seed: int


class Registry:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

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
        self, model_id: int, new: NewVersion, *, serve: bool, event_data: dict[str, Any]
    ) -> VersionRow:
        """Allocates the next number (a unique constraint plus retry keeps replicas apart)."""
        for attempt in range(MAX_VERSION_RETRIES):
            try:
                return self._insert_version(model_id, new, serve=serve, event_data=event_data)
            except IntegrityError:
                if attempt == MAX_VERSION_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _insert_version(
        self, model_id: int, new: NewVersion, *, serve: bool, event_data: dict[str, Any]
    ) -> VersionRow:
        with self._sessions.begin() as session:
            latest = session.scalar(
                select(func.max(VersionRow.number)).where(VersionRow.model_id == model_id)
            )
            number = (latest or 0) + 1
            version = _version_row(model_id, number, new)
            session.add(version)
            model = _locked_model(session, model_id)
            model.head_version = number
            if serve:
                model.served_version = number
            _event(session, model_id, "checkpoint", number, {"reason": new.reason, **event_data})
            if serve:
                _event(session, model_id, "promote", number, {"reason": new.reason})
        return version

    def versions(self, model_id: int) -> Sequence[VersionRow]:
        with self._sessions() as session:
            return session.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model_id)
                .order_by(VersionRow.number)
            ).all()

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

    def move_pointers(
        self, model_id: int, *, kind: str, version: int, head: bool, data: dict[str, Any]
    ) -> None:
        """Serves `version` (and resets the head to it when `head`), with an event saying why."""
        with self._sessions.begin() as session:
            model = _locked_model(session, model_id)
            model.served_version = version
            if head:
                model.head_version = version
            _event(session, model_id, kind, version, data)

    def events(self, model_id: int, *, since: int = 0, limit: int = 1000) -> Sequence[EventRow]:
        with self._sessions() as session:
            return session.scalars(
                select(EventRow)
                .where(EventRow.model_id == model_id, EventRow.id > since)
                .order_by(EventRow.id)
                .limit(limit)
            ).all()


def _locked_model(session: Session, model_id: int) -> ModelRow:
    model = session.get(ModelRow, model_id, with_for_update=True)
    if model is None:
        raise ModelNotFound(str(model_id))
    model.generation += 1
    return model


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
    )


def _event(
    session: Session, model_id: int, kind: str, version: int | None, data: dict[str, Any]
) -> None:
    session.add(EventRow(model_id=model_id, kind=kind, version=version, data=data))
