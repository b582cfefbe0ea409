"""What the service answers, as frozen dataclasses (unknown fields from a newer service are
ignored, so an older client keeps working)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import numpy as np

R = TypeVar("R")


@dataclass(frozen=True)
class Model:
    """A model's description: spec, hyper-parameters, state and version pointers."""

    name: str
    task: str
    spec: dict[str, Any]
    optimizer: dict[str, Any]
    training: dict[str, Any]
    seed: int
    state: str
    stopping_reason: str | None
    step: int
    samples_seen: int
    served_version: int
    head_version: int
    best_version: int
    best_metric: float | None
    rounds_since_improvement: int
    validation_rows: int
    device: str
    created_at: datetime


@dataclass(frozen=True)
class FitResult:
    """A trained (or, with `duplicate`, an already applied) batch and the model's counters."""

    model: str
    step: int
    samples_seen: int
    trained: int
    train_loss: float | None
    version: int
    state: str
    prequential: dict[str, float] | None
    batch_id: str | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class Queued:
    """A batch accepted into the model's queue (`wait=False`): `queued` is the queue depth."""

    model: str
    batch_id: str | None
    queued: int


@dataclass(frozen=True)
class Prediction:
    """A predict answer: the version that answered, labels or values, class probabilities."""

    model: str
    version: int
    predictions: list[Any]
    probabilities: list[list[float]] | None = None


@dataclass(frozen=True)
class Version:
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


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    version: int | None
    data: dict[str, Any]
    created_at: datetime


@dataclass
class StreamReport:
    """What `stream` did: batches acknowledged (`duplicates` among them were applied before),
    429 answers waited out (`throttled`), connection failures retried (`reconnects`), and the
    answer to the last batch, sent with `wait=True` so that every batch is applied when the
    call returns."""

    batches: int = 0
    duplicates: int = 0
    throttled: int = 0
    reconnects: int = 0
    batch_ids: list[str] = field(default_factory=list)
    last: FitResult | None = None


def parse(cls: type[R], body: Any) -> R:
    """`cls` from a JSON object: known fields only, `created_at` as a datetime."""
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object for {cls.__name__}, got {type(body).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {key: value for key, value in body.items() if key in names}
    if isinstance(values.get("created_at"), str):
        values["created_at"] = datetime.fromisoformat(values["created_at"])
    return cls(**values)


def parse_list(cls: type[R], body: Any, key: str) -> list[R]:
    if not isinstance(body, dict) or not isinstance(body.get(key), list):
        raise ValueError(f"expected a JSON object with a list {key!r}")
    return [parse(cls, item) for item in body[key]]


def probabilities_of(prediction: Prediction) -> np.ndarray:
    import numpy as np

    if prediction.probabilities is None:
        raise ValueError(f"model {prediction.model!r} is a regressor: it has no probabilities")
    return np.asarray(prediction.probabilities, dtype=np.float64)
