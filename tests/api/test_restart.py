"""After a restart every model comes back at its last recorded state, on either database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import (
    checkpoint,
    fit,
    head_outputs,
    labelled,
    model_body,
    predicted,
    rollback,
    rows,
)

pytestmark = pytest.mark.parametrize("database", ["sqlite", "postgres"], indirect=True)

PROBE = rows(12, seed=99)
FIRST = labelled(48, seed=1)
SECOND = labelled(48, seed=2)
THIRD = labelled(48, seed=3)
Start = Callable[..., TestClient]


def restart(client: TestClient, start: Start) -> TestClient:
    """Stops the app (lifespan shutdown included) and starts a new one on the same data."""
    client.__exit__(None, None, None)
    return start()


def with_history(client: TestClient) -> TestClient:
    """`m`: create, fit, checkpoint 2, fit, checkpoint 3, rollback to 2 (served and head)."""
    client.post("/v1/models", json=model_body("m", dropout=0.2, seed=5))
    fit(client, "m", FIRST)
    checkpoint(client, "m")
    fit(client, "m", SECOND)
    checkpoint(client, "m")
    rollback(client, "m", 2)
    return client


def model(client: TestClient, name: str = "m") -> dict[str, Any]:
    response = client.get(f"/v1/models/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_restart_brings_back_the_served_and_head_versions(client: TestClient, start: Start) -> None:
    with_history(client)
    after = model(restart(client, start))
    assert (after["served_version"], after["head_version"]) == (2, 2)


def test_restart_brings_back_the_step_counters(client: TestClient, start: Start) -> None:
    before = model(with_history(client))
    after = model(restart(client, start))
    assert (after["step"], after["samples_seen"]) == (before["step"], before["samples_seen"])
    assert after["step"] > 0


def test_restart_brings_back_the_served_predictions_bit_for_bit(
    client: TestClient, start: Start
) -> None:
    before = predicted(with_history(client), "m", PROBE)
    assert predicted(restart(client, start), "m", PROBE) == before


def test_restart_brings_back_every_version_bit_for_bit(client: TestClient, start: Start) -> None:
    with_history(client)
    before = {v: predicted(client, "m", PROBE, version=v) for v in (1, 2, 3)}
    after_restart = restart(client, start)
    assert {v: predicted(after_restart, "m", PROBE, version=v) for v in (1, 2, 3)} == before


def test_restart_brings_back_the_version_history(client: TestClient, start: Start) -> None:
    before = with_history(client).get("/v1/models/m/versions").json()
    after = restart(client, start).get("/v1/models/m/versions").json()
    assert after == before
    assert [v["version"] for v in after["versions"]] == [1, 2, 3]


def test_training_after_restart_matches_training_before_it_bit_for_bit(
    client: TestClient, start: Start
) -> None:
    """The head comes back with its weights, optimizer state and dropout generator."""
    with_history(client)
    loss_before = fit(client, "m", THIRD)["train_loss"]
    outputs_before = head_outputs(client, "m", PROBE)
    rollback(client, "m", 2)
    after_restart = restart(client, start)
    assert fit(after_restart, "m", THIRD)["train_loss"] == loss_before
    assert head_outputs(after_restart, "m", PROBE) == outputs_before


def test_checkpoint_after_restart_takes_the_next_version_number(
    client: TestClient, start: Start
) -> None:
    with_history(client)
    version = restart(client, start).post("/v1/models/m/versions").json()
    assert (version["version"], version["parent"]) == (4, 2)


def test_model_created_after_restart_starts_fresh(client: TestClient, start: Start) -> None:
    with_history(client)
    client.post("/v1/models", json=model_body("twin", seed=8))
    after_restart = restart(client, start)
    created = after_restart.post("/v1/models", json=model_body("new", seed=8))
    assert created.status_code == 201
    body = created.json()
    assert (body["served_version"], body["head_version"], body["step"]) == (1, 1, 0)
    assert predicted(after_restart, "new", PROBE) == predicted(after_restart, "twin", PROBE)


def test_model_created_after_restart_leaves_the_old_ones_intact(
    client: TestClient, start: Start
) -> None:
    with_history(client)
    before = {v: predicted(client, "m", PROBE, version=v) for v in (1, 2, 3)}
    after_restart = restart(client, start)
    after_restart.post("/v1/models", json=model_body("new", seed=8))
    fit(after_restart, "new", FIRST)
    assert checkpoint(after_restart, "new") == 2
    assert {v: predicted(after_restart, "m", PROBE, version=v) for v in (1, 2, 3)} == before
    names = [m["name"] for m in after_restart.get("/v1/models").json()["models"]]
    assert names == ["m", "new"]


def test_deleted_model_does_not_come_back_after_restart(client: TestClient, start: Start) -> None:
    for name in ("gone", "kept"):
        client.post("/v1/models", json=model_body(name))
    fit(client, "gone", FIRST)
    checkpoint(client, "gone")
    assert client.delete("/v1/models/gone").status_code == 204
    after_restart = restart(client, start)
    assert after_restart.get("/v1/models/gone").status_code == 404
    assert [m["name"] for m in after_restart.get("/v1/models").json()["models"]] == ["kept"]


def test_deleted_name_can_be_reused_after_restart(client: TestClient, start: Start) -> None:
    client.post("/v1/models", json=model_body("m"))
    fit(client, "m", FIRST)
    checkpoint(client, "m")
    client.delete("/v1/models/m")
    after_restart = restart(client, start)
    assert after_restart.post("/v1/models", json=model_body("m")).status_code == 201
    versions = after_restart.get("/v1/models/m/versions").json()["versions"]
    assert [(v["version"], v["step"]) for v in versions] == [(1, 0)]


def test_restart_is_ready_with_every_model_loaded(client: TestClient, start: Start) -> None:
    for name in ("a", "b"):
        client.post("/v1/models", json=model_body(name))
    ready = restart(client, start).get("/readyz")
    assert ready.status_code == 200
    assert (ready.json()["detail"]["models"], ready.json()["detail"]["failed"]) == (2, {})
