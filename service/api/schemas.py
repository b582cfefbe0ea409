"""Request and response bodies of the HTTP API (the contract clients rely on)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from models.spec import NetworkSpec, OptimizerSpec, StrictModel
from service.learning.race.plan import MAX_CANDIDATES, SearchConfig
from service.learning.training_config import TrainingConfig

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# Bounds of the database columns: a larger number is a 422, never a driver overflow (500).
MAX_VERSION = 2**31 - 1
MAX_EVENT_ID = 2**63 - 1
ModelName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
Row = list[float]


class CreateModel(StrictModel):
    name: ModelName
    spec: NetworkSpec
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    search: SearchConfig | None = Field(
        default=None,
        description=f"Race candidate variations of this spec on the stream (at most "
        f"{MAX_CANDIDATES}); the best one is served.",
    )


class ModelView(BaseModel):
    name: str
    task: str
    spec: NetworkSpec
    optimizer: OptimizerSpec
    training: TrainingConfig
    seed: int
    state: str = Field(description="training | stopped")
    stopping_reason: str | None
    step: int
    samples_seen: int
    served_version: int
    head_version: int
    best_version: int
    best_metric: float | None = Field(description="Best monitored validation score so far.")
    rounds_since_improvement: int
    validation_rows: int
    replay_rows: int = Field(description="Training rows in the replay buffer.")
    lr: float = Field(description="The learning rate of the next optimizer step.")
    device: str
    created_at: datetime


class CandidateView(BaseModel):
    index: int
    overrides: dict[str, Any] = Field(description="What this candidate changes in the base.")
    spec: NetworkSpec
    optimizer: OptimizerSpec
    batch_size: int
    seed: int
    state: str = Field(description="live | retired")
    leader: bool = Field(description="Whether this candidate is the model's head.")
    retired_at: dict[str, Any] | None = Field(description="round, step and reason, if retired.")
    history: list[dict[str, Any]] = Field(description="round, step and val_* per round.")


class CandidateList(BaseModel):
    model: str
    candidates: list[CandidateView]


class ModelList(BaseModel):
    models: list[ModelView]


class PredictRequest(StrictModel):
    """Documented shape only: the route parses it with orjson and NumPy, not pydantic."""

    inputs: list[Row] = Field(description="Rows of `spec.inputs` finite numbers.")
    version: int | None = Field(
        default=None, ge=1, le=MAX_VERSION, description="Default: the served version."
    )


class PredictResponse(BaseModel):
    model: str
    version: int
    predictions: list[Any]
    probabilities: list[list[float]] | None = None


class FitRequest(StrictModel):
    """Documented shape only: the route parses it with orjson and NumPy, not pydantic."""

    inputs: list[Row]
    targets: list[Any] = Field(description="Class ids, 0/1 labels, or numbers per row.")
    batch_id: str | None = Field(
        default=None, max_length=128, description="Idempotency key: applied at most once."
    )


class FitResponse(BaseModel):
    model: str
    batch_id: str | None = None
    duplicate: bool = Field(default=False, description="This batch id was applied already.")
    step: int
    samples_seen: int
    trained: int = Field(description="Rows trained on (the rest went to the validation buffer).")
    train_loss: float | None = Field(description="Mean loss of this call's steps, if any.")
    version: int = Field(description="The served version.")
    state: str
    prequential: dict[str, float] | None = Field(
        description="Loss and accuracy (or MAE, R²) of this batch before training on it."
    )


class QueuedResponse(BaseModel):
    """202: the batch is queued (`?wait=false`); `queued` is the model's queue depth."""

    model: str
    batch_id: str | None
    queued: int


class ValidationRequest(StrictModel):
    """Documented shape only: parsed like partial-fit."""

    inputs: list[Row]
    targets: list[Any]


class ValidationView(BaseModel):
    model: str
    size: int
    capacity: int
    class_counts: list[int] | None = None


class PromoteRequest(StrictModel):
    version: int = Field(ge=1, le=MAX_VERSION)


class TrainingPatch(BaseModel):
    """Any subset of the `training` section; unknown keys are refused."""

    model_config = {"extra": "allow"}


class VersionView(BaseModel):
    version: int
    parent: int | None
    step: int
    samples_seen: int
    metrics: dict[str, Any]
    reason: str
    status: str
    served: bool
    weights_sha256: str
    weights_bytes: int
    created_at: datetime


class VersionList(BaseModel):
    model: str
    served_version: int
    head_version: int
    versions: list[VersionView]


class RollbackRequest(StrictModel):
    version: int = Field(ge=1, le=MAX_VERSION)


class EventView(BaseModel):
    id: int
    kind: str
    version: int | None
    data: dict[str, Any]
    created_at: datetime


class EventList(BaseModel):
    model: str
    events: list[EventView]


class HistoryMarker(BaseModel):
    id: int
    kind: str
    version: int | None
    step: int | None
    reason: str | None = None


class History(BaseModel):
    model: str
    rounds: int = Field(description="Evaluation rounds recorded (before downsampling).")
    points: list[dict[str, Any]] = Field(
        description="step, samples_seen, train_loss and the validation metrics per round."
    )
    markers: list[HistoryMarker]


class Health(BaseModel):
    status: str
    detail: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ClusterMember(BaseModel):
    replica: str
    models: list[str] = Field(description="The models whose training it owns (its last beat).")


class ClusterView(BaseModel):
    replica: str = Field(description="The replica that answered.")
    members: list[ClusterMember] = Field(description="Live replicas (one without Redis).")
    handoffs: list[dict[str, Any]] = Field(
        description="The latest handoffs, newest first: source, owner (the new one), reason, "
        "and seconds from the decision to the takeover and to the first entry applied."
    )
