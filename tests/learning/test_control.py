"""Training control over HTTP: PATCH training, stop, resume, promote, the validation buffer,
holdout, rounds and prequential metrics, on small real networks and a real database."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    accuracy,
    batch,
    blobs,
    digits_split,
    events,
    fit,
    log_loss,
    model_body,
    model_state,
    noisy_blobs,
    overfitting_body,
    predicted,
)

CLASSES = 3
X, Y = blobs(96, seed=1)
VALID_X, VALID_Y = blobs(60, seed=2)
TRAIN = batch(X, Y)
NOISY_X, NOISY_Y = noisy_blobs(60, seed=1)
NOISY_VALID_X, NOISY_VALID_Y = noisy_blobs(200, seed=2)


def create(client: TestClient, name: str = "m", **training: Any) -> str:
    """A [16] network on the blobs: 96 rows a call are 6 steps of 16, a round every 6 steps."""
    body = model_body(name, hidden=[16], training={"eval_every": 6} | training)
    response = client.post("/v1/models", json=body)
    assert response.status_code == 201, response.text
    return name


def create_overfitting(client: TestClient, name: str = "m", **training: Any) -> str:
    """See `overfitting_body`: one round per call of `NOISY`, minimum at round ~5."""
    assert client.post("/v1/models", json=overfitting_body(name, **training)).status_code == 201
    add_validation(client, name, NOISY_VALID_X, NOISY_VALID_Y)
    return name


def add_validation(client: TestClient, name: str, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    response = client.post(f"/v1/models/{name}/validation", json=batch(x, y))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def validation(client: TestClient, name: str = "m") -> dict[str, Any]:
    response = client.get(f"/v1/models/{name}/validation")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def patch(client: TestClient, changes: dict[str, Any], name: str = "m") -> Any:
    return client.patch(f"/v1/models/{name}/training", json=changes)


def post(client: TestClient, action: str, name: str = "m") -> dict[str, Any]:
    response = client.post(f"/v1/models/{name}/{action}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# -- PATCH /training ------------------------------------------------------------------------


def test_patch_training_answers_and_shows_the_changed_section(client: TestClient) -> None:
    create(client, patience=10)
    response = patch(client, {"patience": 3, "min_delta": 0.01})
    assert response.status_code == 200, response.text
    assert (response.json()["patience"], response.json()["min_delta"]) == (3, 0.01)
    training = model_state(client, "m")["training"]
    assert (training["patience"], training["min_delta"], training["eval_every"]) == (3, 0.01, 6)
    [updated] = events(client, "m", "training_updated")
    assert updated["data"]["training"]["patience"] == 3


def test_patched_patience_applies_from_the_next_round(client: TestClient) -> None:
    create_overfitting(client)
    for _ in range(8):  # past the minimum (round ~5): rounds without improvement pile up
        fit(client, "m", batch(NOISY_X, NOISY_Y))
    waited = model_state(client, "m")["rounds_since_improvement"]
    assert waited >= 2
    assert patch(client, {"patience": 2}).status_code == 200
    answer = fit(client, "m", batch(NOISY_X, NOISY_Y))
    assert answer["state"] == "stopped"
    assert model_state(client, "m")["stopping_reason"] == "patience"


def test_patch_training_refuses_an_unknown_key_naming_it(client: TestClient) -> None:
    create(client)
    response = patch(client, {"patience": 3, "patiance": 4})
    assert response.status_code == 422
    assert response.json()["field"] == "training.patiance"
    assert model_state(client, "m")["training"]["patience"] == 10  # nothing applied


@pytest.mark.parametrize(
    ("field", "value"),
    [("patience", 0), ("holdout", 1.0), ("mode", "sideways"), ("promote", "sometimes"),
     ("min_delta", -0.1), ("keep_versions", 1)],
)  # fmt: skip
def test_patch_training_refuses_a_bad_value_naming_the_field(
    client: TestClient, field: str, value: Any
) -> None:
    create(client)
    before = model_state(client, "m")["training"]
    response = patch(client, {field: value})
    assert response.status_code == 422
    assert response.json()["field"] == f"training.{field}"  # as creation names it
    assert model_state(client, "m")["training"] == before


def test_patch_monitor_that_does_not_fit_the_task_names_the_field(client: TestClient) -> None:
    create(client)
    response = patch(client, {"monitor": "val_mae"})
    assert response.status_code == 422
    assert response.json()["field"] == "training.monitor"  # as creation names it


def test_patch_monitor_measures_improvement_in_the_new_metric(client: TestClient) -> None:
    create_overfitting(client, rollback_tolerance=0.2)
    for _ in range(4):
        fit(client, "m", batch(NOISY_X, NOISY_Y))
    assert model_state(client, "m")["best_metric"] > 0.8  # a loss, above any accuracy here
    assert patch(client, {"monitor": "val_accuracy"}).status_code == 200
    assert model_state(client, "m")["best_metric"] is None  # a loss is no yardstick
    fit(client, "m", batch(NOISY_X, NOISY_Y))
    last_round = events(client, "m", "round")[-1]["data"]
    assert model_state(client, "m")["best_metric"] == last_round["val_accuracy"]
    assert events(client, "m", "rollback") == []


def test_patch_buffer_size_keeps_the_newest_rows(client: TestClient) -> None:
    create(client, buffer_size=30)
    labels = np.array([0] * 25 + [1] * 15 + [2] * 10)
    add_validation(client, "m", VALID_X[:25], labels[:25])
    add_validation(client, "m", VALID_X[25:50], labels[25:])  # the ring wraps mid-way
    assert patch(client, {"buffer_size": 10}).status_code == 200
    assert validation(client)["class_counts"] == [0, 0, 10]


# -- stop, resume ---------------------------------------------------------------------------


def test_stop_answers_stopped_with_reason_manual(client: TestClient) -> None:
    create(client)
    fit(client, "m", TRAIN)
    body = post(client, "stop")
    assert (body["state"], body["stopping_reason"]) == ("stopped", "manual")
    assert [e["data"]["reason"] for e in events(client, "m", "stop")] == ["manual"]


def test_partial_fit_on_stopped_model_routes_rows_to_buffer(client: TestClient) -> None:
    create(client)
    fit(client, "m", TRAIN)
    post(client, "stop")
    before = model_state(client, "m")
    answer = fit(client, "m", TRAIN)
    assert (answer["state"], answer["trained"], answer["train_loss"]) == ("stopped", 0, None)
    assert answer["step"] == before["step"]
    assert set(answer["prequential"]) == {"loss", "accuracy"}  # still scored before it is kept
    assert validation(client)["size"] == len(X)
    assert validation(client)["class_counts"] == np.bincount(Y, minlength=CLASSES).tolist()


def test_manually_stopped_model_only_resumes_by_hand(client: TestClient) -> None:
    create(client, eval_every=2)
    add_validation(client, "m", VALID_X, VALID_Y)
    fit(client, "m", TRAIN)
    post(client, "stop")
    for _ in range(3):  # rows whose labels all moved on: the served version does far worse
        fit(client, "m", batch(X, (Y + 1) % CLASSES))
    assert events(client, "m", "drift") == []
    assert model_state(client, "m")["state"] == "stopped"


def test_resume_trains_again(client: TestClient) -> None:
    create(client)
    post(client, "stop")
    body = post(client, "resume")
    assert (body["state"], body["stopping_reason"]) == ("training", None)
    answer = fit(client, "m", TRAIN)
    assert (answer["state"], answer["trained"], answer["step"]) == ("training", len(X), 6)
    assert [e["data"]["reason"] for e in events(client, "m", "resume")] == ["manual"]


# -- promote --------------------------------------------------------------------------------


def test_promote_serves_the_named_version(client: TestClient) -> None:
    create(client, promote="manual")
    add_validation(client, "m", VALID_X, VALID_Y)
    for _ in range(3):
        fit(client, "m", TRAIN)
    best = model_state(client, "m")["best_version"]
    assert (model_state(client, "m")["served_version"], best) == (1, 4)
    response = client.post("/v1/models/m/promote", json={"version": 3})
    assert response.status_code == 200, response.text
    assert (response.json()["version"], response.json()["served"]) == (3, True)
    assert model_state(client, "m")["served_version"] == 3
    assert predicted(client, "m", VALID_X.tolist()) == predicted(client, "m", VALID_X.tolist(), 3)
    assert [(e["version"], e["data"]["reason"]) for e in events(client, "m", "promote")] == [
        (3, "manual")
    ]


def test_promote_of_a_missing_version_is_a_404(client: TestClient) -> None:
    create(client)
    response = client.post("/v1/models/m/promote", json={"version": 9})
    assert response.status_code == 404
    assert model_state(client, "m")["served_version"] == 1


# -- the validation buffer ------------------------------------------------------------------


def test_validation_reports_size_capacity_and_class_counts(client: TestClient) -> None:
    create(client, buffer_size=100)
    assert validation(client) == {"model": "m", "size": 0, "capacity": 100, "class_counts": None}
    body = add_validation(client, "m", VALID_X[:7], np.array([2, 2, 0, 2, 1, 0, 2]))
    assert (body["size"], body["capacity"], body["class_counts"]) == (7, 100, [2, 1, 4])
    assert model_state(client, "m")["validation_rows"] == 7


def test_buffer_keeps_only_the_latest_buffer_size_rows(client: TestClient) -> None:
    create(client, buffer_size=10)
    add_validation(client, "m", VALID_X[:12], np.array([0] * 12))
    body = add_validation(client, "m", VALID_X[12:16], np.array([1] * 4))
    assert (body["size"], body["class_counts"]) == (10, [6, 4, 0])


def test_holdout_sends_the_same_rows_to_the_buffer_on_every_pass(client: TestClient) -> None:
    create(client, holdout=0.25)
    first, second = fit(client, "m", TRAIN), fit(client, "m", TRAIN)
    held = len(X) - first["trained"]
    assert 0.1 * len(X) < held < 0.4 * len(X)
    assert second["trained"] == first["trained"]
    counts = np.array(validation(client)["class_counts"])
    assert counts.sum() == 2 * held
    assert (counts % 2 == 0).all()  # each held-out row twice: the same rows both times


def test_held_out_rows_go_to_the_buffer_instead_of_training(client: TestClient) -> None:
    create(client, holdout=0.5)
    answer = fit(client, "m", TRAIN)
    held = validation(client)["size"]
    assert 0 < held < len(X)
    assert answer["trained"] == answer["samples_seen"] == len(X) - held
    assert answer["step"] == -(-answer["trained"] // 16)  # mini-batches of the trained rows only


# -- rounds and prequential metrics ---------------------------------------------------------


def test_eval_every_sets_the_steps_between_rounds(client: TestClient) -> None:
    two_steps = batch(X[:32], Y[:32])
    for name, every in (("often", 2), ("seldom", 6)):
        create(client, name, eval_every=every)
        add_validation(client, name, VALID_X, VALID_Y)
        for _ in range(6):
            fit(client, name, two_steps)
    often, seldom = (
        [e["data"]["step"] for e in events(client, n, "round")] for n in ("often", "seldom")
    )
    assert (often, seldom) == ([2, 4, 6, 8, 10, 12], [6, 12])


def test_prequential_metrics_score_the_batch_before_training_on_it(client: TestClient) -> None:
    create(client)
    x = batch(X[:32], Y[:32])
    untrained = predicted(client, "m", x["inputs"])  # version 1: the head before any step
    answer = fit(client, "m", x)
    assert answer["prequential"]["loss"] == pytest.approx(log_loss(untrained, Y[:32]), rel=1e-5)
    predictions = np.asarray(untrained).argmax(axis=1)
    assert answer["prequential"]["accuracy"] == pytest.approx(accuracy(predictions, Y[:32]))
    assert answer["train_loss"] != pytest.approx(answer["prequential"]["loss"])


def test_prequential_accuracy_of_a_fresh_model_is_near_chance(client: TestClient) -> None:
    x_train, _, y_train, _ = digits_split()
    body = model_body("digits", inputs=64, outputs=10, hidden=[32], training={"batch_size": 32})
    assert client.post("/v1/models", json=body).status_code == 201
    answers = [fit(client, "digits", batch(x_train[i : i + 128], y_train[i : i + 128]))
               for i in range(0, 768, 128)]  # fmt: skip
    first, last = answers[0]["prequential"]["accuracy"], answers[-1]["prequential"]["accuracy"]
    assert first < 0.25  # ten classes: chance is 0.1
    assert last > 0.8  # the same measure, once the head has learned from earlier batches
