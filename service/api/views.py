"""Domain objects → response bodies."""

from __future__ import annotations

from service.api.schemas import EventView, FitResponse, ModelView, ValidationView, VersionView
from service.runtime.live import FitOutcome, LiveModel
from service.storage.db.tables import EventRow, VersionRow


def model_view(live: LiveModel) -> ModelView:
    learner = live.learner
    control, head = learner.control, learner.head
    return ModelView(
        name=live.name, task=live.spec.task, spec=live.spec, optimizer=learner.optimizer,
        training=learner.training, seed=live.row.seed, state=control.state,
        stopping_reason=control.stopping_reason, step=head.step, samples_seen=head.samples_seen,
        served_version=learner.served.version, head_version=learner.head_version,
        best_version=learner.best.version, best_metric=learner.stopper.state.best,
        rounds_since_improvement=learner.stopper.state.wait,
        validation_rows=learner.buffer.size, replay_rows=learner.replay.size, lr=learner.lr,
        device=str(head.device),
        created_at=live.row.created_at,
    )  # fmt: skip


def fit_view(live: LiveModel, outcome: FitOutcome, batch_id: str | None) -> FitResponse:
    learner = live.learner
    if outcome.trained is None:  # a duplicate: acknowledged with the current counters
        return FitResponse(
            model=live.name, batch_id=batch_id, duplicate=True, step=learner.head.step,
            samples_seen=learner.head.samples_seen, trained=0, train_loss=None,
            version=learner.served.version, state=learner.control.state, prequential=None,
        )  # fmt: skip
    done, report = outcome.trained, outcome.trained.report
    return FitResponse(
        model=live.name, batch_id=batch_id, duplicate=outcome.duplicate, step=done.step,
        samples_seen=done.samples_seen,
        trained=report.trained, train_loss=report.train_loss, version=done.version,
        state=report.state, prequential=report.prequential,
    )  # fmt: skip


def validation_view(live: LiveModel) -> ValidationView:
    buffer, spec = live.learner.buffer, live.spec
    classes = {"classification": spec.outputs, "binary": 2}.get(spec.task)
    counts = buffer.class_counts(classes) if classes and buffer.size else None
    return ValidationView(
        model=live.name, size=buffer.size, capacity=buffer.capacity, class_counts=counts
    )


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
