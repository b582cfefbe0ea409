"""Specs: every name in the spec's Literals is accepted; a bad spec is refused naming its field."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from models.spec import MAX_LAYERS, MAX_NEURONS, NetworkSpec, OptimizerSpec
from tests.models.examples import (
    ACTIVATIONS,
    INITS,
    LOSSES,
    OPTIMIZERS,
    TASKS,
    network_spec,
    optimizer_spec,
    task_loss_pairs,
)

VALID_NETWORK: dict[str, Any] = {"task": "regression", "inputs": 3, "outputs": 1}

BAD_NETWORKS = [
    pytest.param({"dropout": 1.0}, ("dropout",), id="dropout-1"),
    pytest.param({"dropout": -0.1}, ("dropout",), id="dropout-negative"),
    pytest.param({"dropout": math.nan}, ("dropout",), id="dropout-nan"),
    pytest.param({"bogus": 1}, ("bogus",), id="unknown-key"),
    pytest.param({"hidden": [0]}, ("hidden", 0), id="hidden-width-0"),
    pytest.param({"hidden": [4, 0]}, ("hidden", 1), id="second-hidden-width-0"),
    pytest.param({"hidden": [MAX_NEURONS + 1]}, ("hidden", 0), id="hidden-too-wide"),
    pytest.param({"hidden": [2] * (MAX_LAYERS + 1)}, ("hidden",), id="too-many-layers"),
    pytest.param({"inputs": 0}, ("inputs",), id="inputs-0"),
    pytest.param({"outputs": 0}, ("outputs",), id="outputs-0"),
    pytest.param({"task": "binary", "outputs": 2}, ("outputs",), id="binary-2-outputs"),
    pytest.param({"task": "classification", "outputs": 1}, ("outputs",), id="one-class"),
    pytest.param({"task": "ranking"}, ("task",), id="unknown-task"),
    pytest.param({"activation": "swish"}, ("activation",), id="unknown-activation"),
    pytest.param({"init": "he"}, ("init",), id="unknown-init"),
    pytest.param({"loss": "hinge"}, ("loss",), id="unknown-loss"),
    pytest.param({"normalize": "sometimes"}, ("normalize",), id="normalize-not-bool"),
]

BAD_OPTIMIZERS = [
    pytest.param({"name": "adam", "nesterov": True}, ("nesterov",), id="nesterov-without-sgd"),
    pytest.param({"name": "sgd", "nesterov": True}, ("nesterov",), id="nesterov-without-momentum"),
    pytest.param({"name": "lbfgs"}, ("name",), id="unknown-optimizer"),
    pytest.param({"momentun": 0.9}, ("momentun",), id="unknown-key"),
    pytest.param({"lr": 0.0}, ("lr",), id="lr-0"),
    pytest.param({"lr": math.inf}, ("lr",), id="lr-inf"),
    pytest.param({"momentum": 1.0}, ("momentum",), id="momentum-1"),
    pytest.param({"betas": (0.9, 1.0)}, ("betas", 1), id="beta2-1"),
    pytest.param({"betas": (-0.1, 0.9)}, ("betas", 0), id="beta1-negative"),
    pytest.param({"eps": 0.0}, ("eps",), id="eps-0"),
    pytest.param({"weight_decay": -1.0}, ("weight_decay",), id="weight-decay-negative"),
    pytest.param({"clip_grad_norm": 0.0}, ("clip_grad_norm",), id="clip-0"),
]


def refusal(model: type[BaseModel], values: dict[str, Any]) -> list[tuple[str | int, ...]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(values)
    return [tuple(error["loc"]) for error in caught.value.errors()]


@pytest.mark.parametrize(("overrides", "loc"), BAD_NETWORKS)
def test_bad_network_spec_is_refused_naming_the_field(
    overrides: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    assert refusal(NetworkSpec, {**VALID_NETWORK, **overrides}) == [loc]


@pytest.mark.parametrize(("overrides", "loc"), BAD_OPTIMIZERS)
def test_bad_optimizer_spec_is_refused_naming_the_field(
    overrides: dict[str, Any], loc: tuple[str | int, ...]
) -> None:
    assert refusal(OptimizerSpec, overrides) == [loc]


@pytest.mark.parametrize(("task", "loss"), task_loss_pairs(accepted=False))
def test_loss_that_does_not_fit_the_task_is_refused_naming_loss(task: str, loss: str) -> None:
    values = network_spec(task=task).model_dump() | {"loss": loss}
    assert refusal(NetworkSpec, values) == [("loss",)]


@pytest.mark.parametrize("loss", [loss for loss in LOSSES if loss != "auto"])
def test_every_loss_fits_some_task(loss: str) -> None:
    assert any(loss == accepted for _, accepted in task_loss_pairs(accepted=True))


@pytest.mark.parametrize("task", TASKS)
def test_auto_loss_resolves_to_a_loss_the_task_accepts(task: str) -> None:
    resolved = network_spec(task=task).resolved_loss
    assert resolved != "auto"
    assert (task, resolved) in task_loss_pairs(accepted=True)


@pytest.mark.parametrize(
    "overrides",
    [{"activation": a} for a in ACTIVATIONS] + [{"init": i} for i in INITS],
    ids=lambda overrides: "=".join(*overrides.items()),
)
def test_every_activation_and_init_name_is_accepted(overrides: dict[str, str]) -> None:
    assert network_spec(**overrides).model_dump().items() >= overrides.items()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_name_is_accepted(name: str) -> None:
    assert optimizer_spec(name=name).name == name


def test_nesterov_is_accepted_with_sgd_and_momentum() -> None:
    assert optimizer_spec(name="sgd", momentum=0.9, nesterov=True).nesterov


def test_spec_survives_a_json_round_trip() -> None:
    # The registry stores specs as JSON and validates them again on load.
    spec = network_spec(task="classification", hidden=[3, 2], dropout=0.1, init="orthogonal")
    optimizer = optimizer_spec(name="adam", betas=(0.8, 0.9), clip_grad_norm=1.0)
    assert NetworkSpec.model_validate_json(spec.model_dump_json()) == spec
    assert OptimizerSpec.model_validate_json(optimizer.model_dump_json()) == optimizer


def test_spec_is_frozen() -> None:
    spec = network_spec()
    with pytest.raises(ValidationError) as caught:
        spec.dropout = 0.5  # type: ignore[misc]
    assert [error["loc"] for error in caught.value.errors()] == [("dropout",)]
