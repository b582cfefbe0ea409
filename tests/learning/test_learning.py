"""Learning over HTTP: a real data set streamed through partial-fit, and every optimizer and
activation the spec admits (read from its Literals, so adding one adds it here) trains."""

from __future__ import annotations

from typing import Any, get_args

import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.spec import Activation, OptimizerName
from tests.factories import (
    accuracy,
    batch,
    batches,
    blobs,
    checkpoint,
    digits_split,
    fit,
    log_loss,
    model_body,
)

# Rates that train the small problem below in a few dozen steps; others get DEFAULT_LR.
DEFAULT_LR = 0.01
LEARNING_RATES = {"sgd": 0.1, "adagrad": 0.1}
OPTIMIZERS: dict[str, dict[str, Any]] = {
    name: {"name": name, "lr": LEARNING_RATES.get(name, DEFAULT_LR)}
    for name in get_args(OptimizerName)
} | {"sgd+momentum": {"name": "sgd", "lr": 0.05, "momentum": 0.9}}
ACTIVATIONS: tuple[str, ...] = get_args(Activation)


def predictions(
    client: TestClient, name: str, x: np.ndarray, version: int | None = None
) -> dict[str, Any]:
    request = {"inputs": x.tolist(), "version": version}
    response = client.post(f"/v1/models/{name}/predict", json=request)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.slow
def test_streamed_digits_reach_held_out_accuracy_far_above_chance(client: TestClient) -> None:
    x_train, x_test, y_train, y_test = digits_split()
    body = model_body("digits", inputs=64, outputs=10, hidden=[64], training={"batch_size": 32})
    assert client.post("/v1/models", json=body).status_code == 201
    before = accuracy(predictions(client, "digits", x_test)["predictions"], y_test)
    order = np.random.default_rng(0).permutation(len(x_train))
    for _ in range(3):  # passes over the training stream, 128 rows per partial-fit call
        for request in batches(x_train[order], y_train[order], 128):
            fit(client, "digits", request)
    trained = predictions(client, "digits", x_test, checkpoint(client, "digits"))
    after = accuracy(trained["predictions"], y_test)
    assert before < 0.3  # chance is 0.1
    assert after >= 0.85


def loss_before_and_after_training(client: TestClient, body: dict[str, Any]) -> tuple[float, float]:
    """Trains `body` on a fixed small problem; its log loss on that problem before and after."""
    x, y = blobs(256, seed=0)
    assert client.post("/v1/models", json=body).status_code == 201, body
    before = log_loss(predictions(client, "m", x)["probabilities"], y)
    for _ in range(10):
        fit(client, "m", batch(x, y))
    after = log_loss(predictions(client, "m", x, checkpoint(client, "m"))["probabilities"], y)
    return before, after


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_trains(client: TestClient, optimizer: str) -> None:
    body = model_body("m", optimizer=OPTIMIZERS[optimizer], training={"batch_size": 32})
    before, after = loss_before_and_after_training(client, body)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_trains(client: TestClient, activation: str) -> None:
    body = model_body("m", activation=activation, training={"batch_size": 32})
    before, after = loss_before_and_after_training(client, body)
    assert after < 0.5 * before, (before, after)
