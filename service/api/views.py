"""Domain objects → response bodies."""

from __future__ import annotations

from service.db.tables import EventRow, VersionRow
from service.hub import LiveModel
from service.schemas import EventView, ModelView, VersionView


def model_view(live: LiveModel) -> ModelView:
    return ModelView(
        name=live.name,
        task=live.spec.task,
        spec=live.spec,
        optimizer=live.optimizer,
        training=live.training,
        seed=live.row.seed,
        state="training",
        step=live.head.step,
        samples_seen=live.head.samples_seen,
        served_version=live.served.version,
        head_version=live.head_version,
        device=str(live.head.device),
        created_at=live.row.created_at,
    )


def version_view(row: VersionRow, *, served_version: int) -> VersionView:
    return VersionView(
        version=row.number,
        parent=row.parent,
        step=row.step,
        samples_seen=row.samples_seen,
        metrics=row.metrics,
        reason=row.reason,
        status=row.status,
        served=row.number == served_version,
        weights_sha256=row.weights_sha256,
        weights_bytes=row.weights_bytes,
        created_at=row.created_at,
    )


def event_view(row: EventRow) -> EventView:
    return EventView(
        id=row.id, kind=row.kind, version=row.version, data=row.data, created_at=row.created_at
    )
