"""The declarative spec of a network and its optimizer.

Everything a client may choose about an architecture is a field here; unknown keys
and out-of-range values are rejected by pydantic, so a spec that validates always builds.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["classification", "binary", "regression"]
Activation = Literal[
    "relu", "tanh", "sigmoid", "leaky_relu", "elu", "gelu", "selu", "softplus", "identity"
]
Init = Literal[
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal"
]
Loss = Literal["auto", "cross_entropy", "bce", "mse", "huber"]
OptimizerName = Literal["sgd", "rmsprop", "adam", "adamw", "adagrad"]

MAX_FEATURES = 65_536
MAX_NEURONS = 16_384
MAX_LAYERS = 16


class SpecError(ValueError):
    """A spec that passed field validation but cannot be built (kept for callers' error trees)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class StrictModel(BaseModel):
    """Rejects unknown keys and non-finite floats, the two ways a JSON body most often lies."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class NetworkSpec(StrictModel):
    """Input layer → hidden layers → output layer, with an optional online standardizer in front."""

    task: Task
    inputs: int = Field(ge=1, le=MAX_FEATURES, description="Neurons in the input layer (features).")
    outputs: int = Field(
        ge=1, le=MAX_FEATURES, description="Classes, or regression targets; 1 for binary."
    )
    hidden: list[int] = Field(
        default_factory=lambda: [64],
        max_length=MAX_LAYERS,
        description="Neurons per hidden layer; [] is a linear model.",
    )
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    init: Init = "default"
    normalize: bool = True
    loss: Loss = "auto"

    @model_validator(mode="after")
    def _check_shapes(self) -> Self:
        for width in self.hidden:
            if not 1 <= width <= MAX_NEURONS:
                raise ValueError(f"hidden layer widths must be in [1, {MAX_NEURONS}]")
        if self.task == "binary" and self.outputs != 1:
            raise ValueError("a binary task has exactly one output (one logit)")
        if self.task == "classification" and self.outputs < 2:
            raise ValueError("a classification task needs at least 2 outputs (classes)")
        allowed = {
            "classification": {"auto", "cross_entropy"},
            "binary": {"auto", "bce"},
            "regression": {"auto", "mse", "huber"},
        }[self.task]
        if self.loss not in allowed:
            raise ValueError(f"loss {self.loss!r} does not fit task {self.task!r}")
        return self

    @property
    def resolved_loss(self) -> Loss:
        if self.loss != "auto":
            return self.loss
        return {"classification": "cross_entropy", "binary": "bce", "regression": "mse"}[self.task]  # type: ignore[return-value]


class OptimizerSpec(StrictModel):
    """Mini-batch SGD and its adaptive cousins, plus L1/L2 regularization and gradient clipping."""

    name: OptimizerName = "adam"
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="L2 regularization.")
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="sgd and rmsprop.")
    nesterov: bool = False
    alpha: float = Field(default=0.99, gt=0.0, lt=1.0, description="rmsprop smoothing constant.")
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0.0, le=1.0)
    l1: float = Field(default=0.0, ge=0.0, le=1.0, description="L1 penalty added to the loss.")
    clip_grad_norm: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        if self.nesterov and (self.name != "sgd" or self.momentum == 0.0):
            raise ValueError("nesterov needs name='sgd' and momentum > 0")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError("betas must be in [0, 1)")
        return self
