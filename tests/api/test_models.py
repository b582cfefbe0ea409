"""Create, get, list, delete, predict and partial-fit round trips over HTTP."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.factories import labels, model_body, rows

BOTH = pytest.mark.parametrize("database", ["sqlite", "postgres"], indirect=True)


@BOTH
def test_create_records_version_one_served_and_head(client: TestClient) -> None:
    response = client.post("/v1/models", json=model_body("covtype", inputs=54, outputs=7))
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["served_version"], body["head_version"]) == ("covtype", 1, 1)
    assert (body["step"], body["samples_seen"], body["device"]) == (0, 0, "cpu")
    versions = client.get("/v1/models/covtype/versions").json()["versions"]
    assert [(v["version"], v["reason"], v["served"]) for v in versions] == [(1, "init", True)]


@BOTH
def test_round_trip_create_fit_checkpoint_rollback_delete(client: TestClient) -> None:
    client.post("/v1/models", json=model_body())
    x = rows(40)
    before = client.post("/v1/models/m/predict", json={"inputs": x}).json()
    fit = client.post("/v1/models/m/partial-fit", json={"inputs": x, "targets": labels(40)})
    assert fit.status_code == 200
    assert fit.json()["trained"] == 40
    assert fit.json()["step"] == 3
    assert client.post("/v1/models/m/versions").json()["version"] == 2
    assert client.post("/v1/models/m/rollback", json={"version": 2}).status_code == 200
    after = client.post("/v1/models/m/predict", json={"inputs": x}).json()
    assert after["version"] == 2
    assert after["probabilities"] != before["probabilities"]
    assert client.delete("/v1/models/m").status_code == 204
    assert client.get("/v1/models/m").status_code == 404
    assert client.get("/v1/models").json()["models"] == []


def test_same_seed_gives_same_initial_predictions(client: TestClient) -> None:
    client.post("/v1/models", json=model_body("a", seed=7))
    client.post("/v1/models", json=model_body("b", seed=7))
    client.post("/v1/models", json=model_body("c", seed=8))
    x = {"inputs": rows(5)}
    a, b, c = (client.post(f"/v1/models/{n}/predict", json=x).json() for n in "abc")
    assert a["probabilities"] == b["probabilities"]
    assert a["probabilities"] != c["probabilities"]


def test_predict_returns_labels_and_probabilities_for_classification(client: TestClient) -> None:
    client.post("/v1/models", json=model_body(outputs=3))
    body = client.post("/v1/models/m/predict", json={"inputs": rows(4)}).json()
    assert body["model"] == "m"
    assert body["version"] == 1
    assert all(label in {0, 1, 2} for label in body["predictions"])
    assert all(abs(sum(p) - 1.0) < 1e-5 for p in body["probabilities"])


def test_binary_predicts_zero_or_one_with_two_probabilities(client: TestClient) -> None:
    client.post("/v1/models", json=model_body(task="binary", outputs=1))
    fit = client.post("/v1/models/m/partial-fit", json={"inputs": rows(8), "targets": [0, 1] * 4})
    assert fit.status_code == 200
    body = client.post("/v1/models/m/predict", json={"inputs": rows(3)}).json()
    assert set(body["predictions"]) <= {0, 1}
    assert all(len(p) == 2 and abs(sum(p) - 1) < 1e-6 for p in body["probabilities"])


def test_regression_with_several_outputs_learns_a_linear_map(client: TestClient) -> None:
    body = model_body(task="regression", outputs=2, hidden=[], optimizer={"name": "sgd", "lr": 0.1})
    client.post("/v1/models", json=body)
    x = rows(256)
    y = [[r[0] + r[1], r[2] - r[3]] for r in x]
    losses = [
        client.post("/v1/models/m/partial-fit", json={"inputs": x, "targets": y}).json()[
            "train_loss"
        ]
        for _ in range(20)
    ]
    assert losses[-1] < losses[0] * 0.05
    prediction = client.post("/v1/models/m/predict", json={"inputs": [[1, 1, 0, 0]]}).json()
    assert prediction["probabilities"] is None


def test_huber_loss_is_accepted_for_regression(client: TestClient) -> None:
    response = client.post(
        "/v1/models", json=model_body(task="regression", outputs=1, loss="huber")
    )
    assert response.status_code == 201
    fit = client.post("/v1/models/m/partial-fit", json={"inputs": rows(4), "targets": [1, 2, 3, 4]})
    assert fit.json()["trained"] == 4


def test_predict_an_older_version_by_number(client: TestClient) -> None:
    client.post("/v1/models", json=model_body())
    x = rows(6)
    v1 = client.post("/v1/models/m/predict", json={"inputs": x}).json()["probabilities"]
    client.post("/v1/models/m/partial-fit", json={"inputs": x, "targets": labels(6)})
    client.post("/v1/models/m/versions")
    client.post("/v1/models/m/rollback", json={"version": 2})
    old = client.post("/v1/models/m/predict", json={"inputs": x, "version": 1}).json()
    assert old["version"] == 1
    assert old["probabilities"] == v1


def test_get_model_shows_spec_optimizer_state_counters_and_device(client: TestClient) -> None:
    client.post(
        "/v1/models", json=model_body(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    )
    client.post("/v1/models/m/partial-fit", json={"inputs": rows(20), "targets": labels(20)})
    body = client.get("/v1/models/m").json()
    assert body["optimizer"]["momentum"] == 0.9
    assert body["spec"]["hidden"] == [16]
    assert (body["step"], body["samples_seen"], body["state"]) == (2, 20, "training")
    assert body["device"] == "cpu"


def test_list_models_is_sorted_by_name(client: TestClient) -> None:
    for name in ["zeta", "alpha", "mid"]:
        client.post("/v1/models", json=model_body(name))
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == [
        "alpha",
        "mid",
        "zeta",
    ]


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "detail": {}}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["detail"]["database"] == "ok"
