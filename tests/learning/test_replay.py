"""Replay, steps per batch and learning-rate schedules over HTTP, and the defaults' floor on a
bundled data set."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from service.learning.training_config import TrainingConfig
from tests.factories import (
    batch,
    blobs,
    events,
    fit,
    log_loss,
    model_body,
    model_state,
    noisy_blobs,
    overfitting_body,
    predicted,
)

X, Y = blobs(96, seed=1)


def create(client: TestClient, name: str = "m", **training: Any) -> str:
    body = model_body(name, training=training)
    response = client.post("/v1/models", json=body)
    assert response.status_code == 201, response.text
    return name


# -- steps per batch and replay ----------------------------------------------------------------


def test_steps_per_batch_takes_that_many_optimizer_steps_per_mini_batch(
    client: TestClient,
) -> None:
    create(client, steps_per_batch=3)  # batch_size 16: 40 rows are mini-batches of 16, 16, 8
    answer = fit(client, "m", batch(X[:40], Y[:40]))
    assert (answer["step"], answer["samples_seen"], answer["trained"]) == (9, 40, 40)


def test_more_steps_per_batch_learn_more_from_the_same_rows(client: TestClient) -> None:
    losses = {}
    for steps in (1, 4):
        name = create(client, f"steps{steps}", steps_per_batch=steps)
        for _ in range(2):
            fit(client, name, batch(X, Y))
        losses[steps] = log_loss(predicted(client, name, X.tolist(), _checkpoint(client, name)), Y)
    assert losses[4] < 0.7 * losses[1], losses


def test_replay_keeps_only_rows_that_trained_up_to_its_capacity(client: TestClient) -> None:
    create(client, replay=50, holdout=0.3)
    answer = fit(client, "m", batch(X[:40], Y[:40]))
    state = model_state(client, "m")
    assert 0 < answer["trained"] < 40, "some rows should have been held out"
    assert state["replay_rows"] == answer["trained"]
    assert state["validation_rows"] == 40 - answer["trained"]
    fit(client, "m", batch(X[40:], Y[40:]))
    assert model_state(client, "m")["replay_rows"] == 50


def test_replay_trains_each_mini_batch_beside_replayed_rows(client: TestClient) -> None:
    """The first batch finds the buffer empty: both models train alike. From the second on,
    the model with replay trains on more rows than it was sent."""
    first, second = batch(X[:48], Y[:48]), batch(X[48:], Y[48:])
    plain, replayed = create(client, "plain"), create(client, "replayed", replay=1000)
    assert fit(client, plain, first)["train_loss"] == fit(client, replayed, first)["train_loss"]
    losses = [fit(client, name, second)["train_loss"] for name in (plain, replayed)]
    assert losses[0] != losses[1]
    assert model_state(client, plain)["replay_rows"] == 0
    assert model_state(client, replayed)["replay_rows"] == 96


@pytest.mark.parametrize(
    ("task", "outputs", "targets"),
    [
        ("binary", 1, lambda y: (y > 0).astype(int)),
        ("regression", 1, lambda y: y.astype(float)),
        ("regression", 2, lambda y: np.stack([y, -y], axis=1).astype(float)),
    ],
)
def test_replay_trains_every_task_and_target_shape(
    client: TestClient, task: str, outputs: int, targets: Any
) -> None:
    body = model_body(
        "m", task=task, outputs=outputs, training={"replay": 64, "steps_per_batch": 2}
    )
    assert client.post("/v1/models", json=body).status_code == 201
    for start in (0, 48):
        answer = fit(client, "m", batch(X[start : start + 48], targets(Y[start : start + 48])))
    assert answer["step"] == 12
    assert model_state(client, "m")["replay_rows"] == 64


def test_patch_replay_keeps_the_newest_rows(client: TestClient) -> None:
    create(client, replay=100)
    fit(client, "m", batch(X, Y))
    patched = client.patch("/v1/models/m/training", json={"replay": 30})
    assert patched.status_code == 200, patched.text
    assert model_state(client, "m")["replay_rows"] == 30
    assert fit(client, "m", batch(X[:16], Y[:16]))["step"] == 7


# -- learning-rate schedules ------------------------------------------------------------------


def test_warmup_raises_the_rate_linearly_over_warmup_steps(client: TestClient) -> None:
    create(client, lr_schedule="warmup", warmup_steps=10, eval_every=3)  # optimizer lr 0.01
    valid_x, valid_y = blobs(30, seed=2)  # rounds need validation rows
    assert client.post("/v1/models/m/validation", json=batch(valid_x, valid_y)).status_code == 200
    assert model_state(client, "m")["lr"] == 0.01 * (1 / 10)
    fit(client, "m", batch(X[:48], Y[:48]))  # three steps
    assert model_state(client, "m")["lr"] == 0.01 * (4 / 10)
    for _ in range(2):  # three more each: step 9 (counting from 0) is the last of the warm-up
        fit(client, "m", batch(X[:48], Y[:48]))
    assert model_state(client, "m")["lr"] == 0.01
    rounds = [e["data"] for e in events(client, "m", "round")]
    # a round's rate is that of its last step
    expected = [(3, 0.01 * (3 / 10)), (6, 0.01 * (6 / 10)), (9, 0.01 * (9 / 10))]
    assert [(r["step"], r["lr"]) for r in rounds] == expected


def test_reduce_on_plateau_halves_the_rate_after_patience_rounds_without_improvement(
    client: TestClient,
) -> None:
    """`overfitting_body`: one round per call, the validation loss falls for about five rounds,
    then rises; with lr_patience 2 the rate halves at the second round without improvement."""
    training = {"lr_schedule": "reduce_on_plateau", "lr_patience": 2, "lr_factor": 0.5}
    assert client.post("/v1/models", json=overfitting_body("m", **training)).status_code == 201
    valid_x, valid_y = noisy_blobs(200, seed=2)
    assert client.post("/v1/models/m/validation", json=batch(valid_x, valid_y)).status_code == 200
    train_x, train_y = noisy_blobs(60, seed=1)
    for _ in range(12):
        fit(client, "m", batch(train_x, train_y))
    reduced = events(client, "m", "lr_reduced")
    pairs = [(e["data"]["from_lr"], e["data"]["lr"]) for e in reduced[:2]]
    assert pairs == [(0.005, 0.0025), (0.0025, 0.00125)]
    rounds = [e["data"] for e in events(client, "m", "round")]
    losses = [r["val_loss"] for r in rounds]
    at = next(i for i, r in enumerate(rounds) if r["step"] == reduced[0]["data"]["step"])
    assert at >= 3
    assert min(losses[at - 1 : at + 1]) >= min(losses[: at - 1])  # two rounds, no improvement
    assert [r["lr"] for r in rounds[: at + 1]] == [0.005] * (at + 1)
    assert rounds[at + 1]["lr"] == 0.0025
    assert model_state(client, "m")["lr"] == reduced[-1]["data"]["lr"]
    history = client.get("/v1/models/m/history").json()["points"]
    assert [p["lr"] for p in history] == [r["lr"] for r in rounds]


# -- the defaults, on a bundled data set -------------------------------------------------------


def test_defaults_reach_090_prequential_accuracy_on_digits_in_three_passes(
    client: TestClient,
) -> None:
    """Only task, inputs and outputs: test-then-train with the served version, 64 rows a call."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(x)) for _ in range(3)])
    x, y = x[order].astype(np.float32), y[order]
    spec = {"task": "classification", "inputs": 64, "outputs": 10}
    assert client.post("/v1/models", json={"name": "d", "spec": spec}).status_code == 201
    correct = 0
    for start in range(0, len(y), 64):
        rows, labels = x[start : start + 64], y[start : start + 64]
        probabilities = predicted(client, "d", rows.tolist())
        correct += int((np.argmax(probabilities, axis=1) == labels).sum())
        fit(client, "d", batch(rows, labels))
    assert correct / len(y) >= 0.9


def _checkpoint(client: TestClient, name: str) -> int:
    response = client.post(f"/v1/models/{name}/versions")
    assert response.status_code == 201, response.text
    number: int = response.json()["version"]
    return number


def test_a_training_section_stored_before_replay_existed_reads_back_without_it() -> None:
    """A snapshot or log record written before these fields existed must replay as it ran."""
    old = TrainingConfig().model_dump()
    for name in ("replay", "replay_ratio", "steps_per_batch", "lr_schedule", "warmup_steps"):
        old.pop(name)
    restored = TrainingConfig.stored(old)
    assert (restored.replay, restored.steps_per_batch, restored.lr_schedule) == (0, 1, "constant")
    current = TrainingConfig.stored(TrainingConfig().model_dump())
    assert (current.replay, current.steps_per_batch) == (2000, 2)
