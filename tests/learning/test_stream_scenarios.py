"""The learning guards end to end: an overfitting stream stops, a poisoned one is rolled back,
a drifting one resumes, and a (graceful) restart brings a model back exactly as it was: its
control state, its validation buffer row for row, and the training since its last checkpoint.

The data-set scenarios stream scikit-learn's digits (8×8 images, ten classes) through HTTP
to real networks; the restart ones the small overfitting problem of `overfitting_body`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from tests.factories import (
    accuracy,
    batch,
    digits_split,
    events,
    fit,
    log_loss,
    model_body,
    model_state,
    noisy,
    noisy_blobs,
    overfitting_body,
    predicted,
)

Start = Callable[..., TestClient]
X_TRAIN, X_TEST, Y_TRAIN, Y_TEST = digits_split()


def create(client: TestClient, name: str, **body: Any) -> None:
    response = client.post("/v1/models", json=model_body(name, inputs=64, outputs=10, **body))
    assert response.status_code == 201, response.text


def stream(client: TestClient, name: str, x: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    """One pass over `x`, `y` in calls of 160 rows (five steps of 32); the answers."""
    return [fit(client, name, batch(x[i : i + 160], y[i : i + 160])) for i in range(0, len(x), 160)]


def until_stopped(client: TestClient, name: str, x: np.ndarray, y: np.ndarray) -> None:
    for _ in range(10):
        if stream(client, name, x, y)[-1]["state"] == "stopped":
            return
    raise AssertionError(f"{name} never stopped")


# -- 1. overfitting stops --------------------------------------------------------------------


@pytest.mark.slow
def test_overfitting_stream_stops_near_its_minimum_and_serves_its_best_version(
    client: TestClient,
) -> None:
    # 300 digits with 30% of their labels redrawn, streamed again and again to a network far
    # too large for them; 30% of the rows are held out by the service into its buffer. A
    # version is checkpointed by hand after every pass, so the overfit heads are kept too.
    x, y = X_TRAIN[:300], noisy(Y_TRAIN[:300], 0.3, 10, seed=0)
    held_out_x, held_out_y = X_TEST[:300], noisy(Y_TEST[:300], 0.3, 10, seed=1)
    training = {"batch_size": 32, "holdout": 0.3, "eval_every": 5, "patience": 5,
                "rollback_tolerance": None}  # fmt: skip
    create(client, "big", hidden=[512, 512], optimizer={"name": "adam", "lr": 0.001},
           training=training)  # fmt: skip
    for _ in range(20):
        if fit(client, "big", batch(x, y))["state"] == "stopped":
            break
        assert client.post("/v1/models/big/versions").status_code == 201
    losses = [e["data"]["val_loss"] for e in events(client, "big", "round")]
    lowest = int(np.argmin(losses))
    assert losses[lowest] < 0.8 * losses[0]  # it fell,
    assert losses[-1] > 1.1 * losses[lowest]  # then rose,
    state = model_state(client, "big")
    assert (state["state"], state["stopping_reason"]) == ("stopped", "patience")
    assert len(losses) - 1 - lowest == training["patience"]  # and it stopped patience later
    versions = [v["version"] for v in client.get("/v1/models/big/versions").json()["versions"]]
    held_out = {
        v: log_loss(predicted(client, "big", held_out_x.tolist(), v), held_out_y) for v in versions
    }
    assert len(held_out) >= 10
    assert held_out[state["served_version"]] <= 1.05 * min(held_out.values())
    assert held_out[versions[-1]] > 1.1 * min(held_out.values())  # the overfit heads were worse


# -- 2. poisoned stream ----------------------------------------------------------------------


@pytest.mark.slow
def test_poisoned_stream_is_rolled_back_and_never_served(client: TestClient) -> None:
    create(client, "digits", hidden=[64], training={"batch_size": 32, "eval_every": 5,
                                                    "patience": 20})  # fmt: skip
    valid = batch(X_TEST[:200], Y_TEST[:200])
    assert client.post("/v1/models/digits/validation", json=valid).status_code == 200
    stream(client, "digits", X_TRAIN[:960], Y_TRAIN[:960])
    probe = X_TEST[200:].tolist()
    before, served = predicted(client, "digits", probe), model_state(client, "digits")
    assert accuracy(np.argmax(before, axis=1).tolist(), Y_TEST[200:]) > 0.85
    answers = stream(client, "digits", X_TRAIN[960:], 9 - Y_TRAIN[960:])  # inverted labels
    [rollback] = events(client, "digits", "rollback")
    assert rollback["data"]["reason"] == "degraded"
    assert rollback["data"]["score"] > 1.2 * rollback["data"]["best"]
    assert predicted(client, "digits", probe) == before  # bit for bit
    assert model_state(client, "digits")["served_version"] == served["served_version"]
    assert {a["version"] for a in answers} == {served["served_version"]}


# -- 3. drift --------------------------------------------------------------------------------


@pytest.mark.slow
def test_drift_after_an_early_stop_resumes_training_and_accuracy_recovers(
    client: TestClient,
) -> None:
    training = {"batch_size": 32, "eval_every": 5, "holdout": 0.2, "buffer_size": 200,
                "stopping_threshold": 0.3}  # fmt: skip
    create(client, "digits", hidden=[64], training=training)
    until_stopped(client, "digits", X_TRAIN, Y_TRAIN)
    assert model_state(client, "digits")["stopping_reason"] == "stopping_threshold"
    shifted = (Y_TRAIN + 1) % 10  # the same images, every label moved one class on
    answers = stream(client, "digits", X_TRAIN, shifted)
    kinds = [e["kind"] for e in events(client, "digits") if e["kind"] in {"drift", "resume"}]
    assert kinds == ["drift", "resume"]
    [drift] = events(client, "digits", "drift")
    assert drift["data"]["score"] > 1.1 * drift["data"]["at_stop"]
    assert events(client, "digits", "resume")[0]["data"]["reason"] == "drift"
    assert answers[0]["trained"] == 0  # it went to the buffer and set off the drift check
    assert answers[0]["state"] == "training"  # the state after that check: resumed
    assert all(a["state"] == "training" and a["trained"] > 0 for a in answers[1:4])
    recovered = predicted(client, "digits", X_TEST.tolist())
    assert accuracy(np.argmax(recovered, axis=1).tolist(), (Y_TEST + 1) % 10) > 0.85


# -- 4. restart ------------------------------------------------------------------------------

BLOBS_X, BLOBS_Y = noisy_blobs(60, seed=1)
BLOBS_VALID_X, BLOBS_VALID_Y = noisy_blobs(200, seed=2)
CONTROL_FIELDS = ("state", "stopping_reason", "best_metric", "rounds_since_improvement",
                  "served_version", "head_version", "best_version", "step", "samples_seen",
                  "training")  # fmt: skip


def overfitting(client: TestClient, *, patience: int = 3) -> None:
    """`blobs`: see `overfitting_body`; one round per call, minimum at round ~5."""
    body = overfitting_body("blobs", patience=patience)
    assert client.post("/v1/models", json=body).status_code == 201
    valid = batch(BLOBS_VALID_X, BLOBS_VALID_Y)
    assert client.post("/v1/models/blobs/validation", json=valid).status_code == 200


def stopped_early(client: TestClient) -> dict[str, Any]:
    overfitting(client)
    for _ in range(20):
        if fit(client, "blobs", batch(BLOBS_X, BLOBS_Y))["state"] == "stopped":
            return model_state(client, "blobs")
    raise AssertionError("blobs never stopped")


def restart(client: TestClient, start: Start) -> TestClient:
    """Stops the app (lifespan shutdown included) and starts a new one on the same data."""
    client.__exit__(None, None, None)
    return start()


def test_restart_after_an_early_stop_brings_back_the_control_state(
    client: TestClient, start: Start
) -> None:
    before = stopped_early(client)
    assert before["served_version"] == before["best_version"] > 1
    after = model_state(restart(client, start), "blobs")
    assert {f: after[f] for f in CONTROL_FIELDS} == {f: before[f] for f in CONTROL_FIELDS}


def test_restart_serves_the_same_predictions_bit_for_bit(client: TestClient, start: Start) -> None:
    stopped_early(client)
    probe = BLOBS_VALID_X[:20].tolist()
    before = predicted(client, "blobs", probe)
    assert predicted(restart(client, start), "blobs", probe) == before


def test_validation_buffer_survives_a_restart_row_for_row(client: TestClient, start: Start) -> None:
    before = stopped_early(client)
    buffer = client.get("/v1/models/blobs/validation").json()
    assert before["validation_rows"] == buffer["size"] == len(BLOBS_VALID_X)
    client = restart(client, start)
    assert model_state(client, "blobs")["validation_rows"] == len(BLOBS_VALID_X)
    assert client.get("/v1/models/blobs/validation").json() == buffer


def test_streaming_carries_on_after_a_restart(client: TestClient, start: Start) -> None:
    before = stopped_early(client)
    client = restart(client, start)
    answer = fit(client, "blobs", batch(BLOBS_VALID_X, BLOBS_VALID_Y))  # still stopped
    assert (answer["state"], answer["trained"]) == ("stopped", 0)
    assert model_state(client, "blobs")["validation_rows"] == 2 * len(BLOBS_VALID_X)
    assert client.post("/v1/models/blobs/resume").status_code == 200
    answer = fit(client, "blobs", batch(BLOBS_X, BLOBS_Y))
    assert (answer["state"], answer["trained"]) == ("training", len(BLOBS_X))
    assert answer["step"] == before["step"] + 3
    assert events(client, "blobs", "round")[-1]["data"]["step"] == answer["step"]


def test_training_after_a_restart_matches_training_without_one(
    client: TestClient, start: Start, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # A twin service on its own data directory streams the same rows and is never restarted.
    twin_dir = tmp_path / "twin"
    twin = start(make_settings(data_dir=twin_dir, database_url=f"sqlite:///{twin_dir}/g.db",
                               torch_threads=1))  # fmt: skip
    for app in (client, twin):
        overfitting(app, patience=50)
        for _ in range(8):  # improvements until round ~5, then none
            fit(app, "blobs", batch(BLOBS_X, BLOBS_Y))
    before = model_state(client, "blobs")
    last = client.get(f"/v1/models/blobs/versions/{before['head_version']}").json()
    assert before["step"] == 24 > last["step"]  # it trained on past its last checkpoint
    client = restart(client, start)
    assert {f: model_state(client, "blobs")[f] for f in CONTROL_FIELDS} == {
        f: before[f] for f in CONTROL_FIELDS
    }
    after, untouched = (fit(app, "blobs", batch(BLOBS_X, BLOBS_Y)) for app in (client, twin))
    assert after == untouched  # the same loss, prequential metrics and step, bit for bit
    last_rounds = [events(app, "blobs", "round")[-1]["data"] for app in (client, twin)]
    assert last_rounds[0] == last_rounds[1]  # scored on the same buffer, row for row
