"""The declarative spec of a network and its optimizer.

Everything a client may choose about an architecture is a field here; unknown keys
and out-of-range values are rejected by pydantic, so a spec that validates always builds.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

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
# Weights, gradients, two Adam moments and the served/best copies all live in memory: a spec
# over this is refused (422) instead of exhausting the host at creation.
MAX_PARAMETERS = 50_000_000

Width = Annotated[int, Field(ge=1, le=MAX_NEURONS)]
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]
LOSSES_BY_TASK: dict[str, set[str]] = {
    "classification": {"auto", "cross_entropy"},
    "binary": {"auto", "bce"},
    "regression": {"auto", "mse", "huber"},
}


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
    hidden: list[Width] = Field(
        default_factory=lambda: [64],
        max_length=MAX_LAYERS,
        description="Neurons per hidden layer; [] is a linear model.",
    )
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    init: Init = "default"
    normalize: bool = True
    normalize_target: bool = Field(
        default=True,
        description="Regression: learn standardized targets (running mean and std of the "
        "training rows' targets, saved with the weights); answers are in target units.",
    )
    loss: Loss = "auto"

    # Cross-field checks are field validators (not model validators) so that the error's
    # loc names the offending field; each reads only fields declared before it.
    @field_validator("outputs")
    @classmethod
    def _check_outputs(cls, outputs: int, info: ValidationInfo) -> int:
        task = info.data.get("task")
        if task == "binary" and outputs != 1:
            raise ValueError("a binary task has exactly one output (one logit)")
        if task == "classification" and outputs < 2:
            raise ValueError("a classification task needs at least 2 outputs (classes)")
        return outputs

    @field_validator("hidden")
    @classmethod
    def _check_size(cls, hidden: list[int], info: ValidationInfo) -> list[int]:
        inputs, outputs = info.data.get("inputs"), info.data.get("outputs")
        if inputs is None or outputs is None:
            return hidden
        widths = [inputs, *hidden, outputs]
        count = sum((fan_in + 1) * fan_out for fan_in, fan_out in pairwise(widths))
        if count > MAX_PARAMETERS:
            raise ValueError(
                f"the network would have {count:,} parameters; the limit is {MAX_PARAMETERS:,}"
            )
        return hidden

    @field_validator("loss")
    @classmethod
    def _check_loss(cls, loss: Loss, info: ValidationInfo) -> Loss:
        task = info.data.get("task")
        if task is not None and loss not in LOSSES_BY_TASK[task]:
            raise ValueError(f"loss {loss!r} does not fit task {task!r}")
        return loss

    @classmethod
    def stored(cls, data: dict[str, object]) -> NetworkSpec:
        """A spec read back from the database or a checkpoint (not from a client): one stored
        before target standardization existed learns, and loads its weights, as it did."""
        return cls.model_validate({"normalize_target": False} | data)

    @property
    def resolved_loss(self) -> Loss:
        if self.loss != "auto":
            return self.loss
        return {"classification": "cross_entropy", "binary": "bce", "regression": "mse"}[self.task]  # type: ignore[return-value]


class OptimizerSpec(StrictModel):
    """Mini-batch SGD and its adaptive cousins, plus L1/L2 regularization and gradient clipping."""

    name: OptimizerName = "adam"
    lr: float = Field(
        default=0.008, gt=0.0, le=10.0, description="Default chosen by bench.prequential."
    )
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0, description="L2 regularization.")
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="sgd and rmsprop.")
    nesterov: bool = False
    alpha: float = Field(default=0.99, gt=0.0, lt=1.0, description="rmsprop smoothing constant.")
    betas: tuple[Beta, Beta] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0.0, le=1.0)
    l1: float = Field(default=0.0, ge=0.0, le=1.0, description="L1 penalty added to the loss.")
    clip_grad_norm: float | None = Field(default=None, gt=0.0)

    @field_validator("nesterov")
    @classmethod
    def _check_nesterov(cls, nesterov: bool, info: ValidationInfo) -> bool:
        if nesterov and (info.data.get("name") != "sgd" or info.data.get("momentum") == 0.0):
            raise ValueError("nesterov needs name='sgd' and momentum > 0")
        return nesterov
