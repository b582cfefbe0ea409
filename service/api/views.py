"""Domain objects → response bodies."""

from __future__ import annotations

from service.api.schemas import EventView, FitResponse, ModelView, ValidationView, VersionView
from service.runtime.live import FitOutcome, LiveModel
from service.storage.db.tables import EventRow, VersionRow


def model_view(live: LiveModel) -> ModelView:
    status = live.status
    return ModelView(
        name=live.name, task=status.spec.task, spec=status.spec, optimizer=status.optimizer,
        training=status.training, seed=live.row.seed, state=status.state,
        stopping_reason=status.stopping_reason, step=status.step,
        samples_seen=status.samples_seen, served_version=status.served_version,
        head_version=status.head_version, best_version=status.best_version,
        best_metric=status.best_metric,
        rounds_since_improvement=status.rounds_since_improvement,
        validation_rows=status.validation_rows, replay_rows=status.replay_rows, lr=status.lr,
        device=status.device, created_at=live.row.created_at,
    )  # fmt: skip


def fit_view(live: LiveModel, outcome: FitOutcome, batch_id: str | None) -> FitResponse:
    if outcome.trained is None:  # a duplicate: acknowledged with the current counters
        status = live.status
        return FitResponse(
            model=live.name, batch_id=batch_id, duplicate=True, step=status.step,
            samples_seen=status.samples_seen, trained=0, train_loss=None,
            version=status.served_version, state=status.state, prequential=None,
        )  # fmt: skip
    done, report = outcome.trained, outcome.trained.report
    return FitResponse(
        model=live.name, batch_id=batch_id, duplicate=outcome.duplicate, step=done.step,
        samples_seen=done.samples_seen,
        trained=report.trained, train_loss=report.train_loss, version=done.version,
        state=report.state, prequential=report.prequential,
    )  # fmt: skip


def validation_view(live: LiveModel) -> ValidationView:
    status = live.status
    counts = None if status.class_counts is None else list(status.class_counts)
    return ValidationView(
        model=live.name, size=status.validation_rows, capacity=status.validation_capacity,
        class_counts=counts,
    )  # fmt: skip


def version_view(row: VersionRow, *, served_version: int) -> VersionView:
    return VersionView(
        version=row.number, parent=row.parent, step=row.step, samples_seen=row.samples_seen,
        metrics=row.metrics, reason=row.reason, status=row.status,
        served=row.number == served_version, weights_sha256=row.weights_sha256,
        weights_bytes=row.weights_bytes, created_at=row.created_at,
    )  # fmt: skip


def event_view(row: EventRow) -> EventView:
    return EventView(
        id=row.id, kind=row.kind, version=row.version, data=row.data, created_at=row.created_at
    )
