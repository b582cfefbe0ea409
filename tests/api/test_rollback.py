"""Rollback serves an older version exactly and resets the training head to it."""

from __future__ import annotations

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

BOTH = pytest.mark.parametrize("database", ["sqlite", "postgres"], indirect=True)
PROBE = rows(12, seed=99)
FIRST = labelled(48, seed=1)
SECOND = labelled(48, seed=2)


@pytest.fixture
def trained(client: TestClient) -> TestClient:
    """`m` with versions 1 (init), 2 (after FIRST) and 3 (after SECOND); version 1 served."""
    client.post("/v1/models", json=model_body("m", dropout=0.2, seed=5))
    fit(client, "m", FIRST)
    assert checkpoint(client, "m") == 2
    fit(client, "m", SECOND)
    assert checkpoint(client, "m") == 3
    return client


@BOTH
def test_rollback_serves_exactly_what_each_version_predicted(trained: TestClient) -> None:
    served_as: dict[int, list[object]] = {}
    for version in (1, 2, 3):
        rollback(trained, "m", version)
        served_as[version] = predicted(trained, "m", PROBE)
    assert served_as[1] != served_as[2] != served_as[3]
    for version in (2, 1, 3):
        rollback(trained, "m", version)
        assert predicted(trained, "m", PROBE) == served_as[version]


def test_rollback_serves_what_predict_by_version_number_gave(trained: TestClient) -> None:
    by_number = predicted(trained, "m", PROBE, version=2)
    rollback(trained, "m", 2)
    assert predicted(trained, "m", PROBE) == by_number


def test_predict_after_rollback_reports_the_rolled_back_version(trained: TestClient) -> None:
    rollback(trained, "m", 3)
    response = trained.post("/v1/models/m/predict", json={"inputs": PROBE})
    assert response.json()["version"] == 3


@BOTH
def test_retraining_from_a_rolled_back_head_reproduces_the_same_weights(
    trained: TestClient,
) -> None:
    """Version 3 was FIRST then SECOND from version 1; from version 2, SECOND again gives it."""
    version_three = predicted(trained, "m", PROBE, version=3)
    rollback(trained, "m", 2)
    fit(trained, "m", SECOND)
    assert head_outputs(trained, "m", PROBE) == version_three


def test_retraining_from_a_rolled_back_head_repeats_the_same_losses(client: TestClient) -> None:
    client.post("/v1/models", json=model_body("m", dropout=0.2, seed=5))
    fit(client, "m", FIRST)
    checkpoint(client, "m")
    first_time = [fit(client, "m", SECOND)["train_loss"] for _ in range(3)]
    rollback(client, "m", 2)
    second_time = [fit(client, "m", SECOND)["train_loss"] for _ in range(3)]
    assert second_time == first_time
    assert first_time[-1] < first_time[0]


def test_rollback_to_the_initial_version_forgets_all_training(trained: TestClient) -> None:
    trained.post("/v1/models", json=model_body("twin", dropout=0.2, seed=5))
    rollback(trained, "m", 1)
    fit(trained, "m", FIRST)
    fit(trained, "twin", FIRST)
    assert head_outputs(trained, "m", PROBE) == head_outputs(trained, "twin", PROBE)


def test_rollback_moves_the_served_and_head_pointers(trained: TestClient) -> None:
    rollback(trained, "m", 2)
    model = trained.get("/v1/models/m").json()
    assert (model["served_version"], model["head_version"]) == (2, 2)
    listing = trained.get("/v1/models/m/versions").json()
    assert (listing["served_version"], listing["head_version"]) == (2, 2)
    assert [v["version"] for v in listing["versions"] if v["served"]] == [2]


def test_checkpoint_after_rollback_names_the_rolled_back_version_its_parent(
    trained: TestClient,
) -> None:
    rollback(trained, "m", 2)
    fit(trained, "m", SECOND)
    version = trained.post("/v1/models/m/versions").json()
    assert (version["version"], version["parent"]) == (4, 2)


def test_rollback_is_recorded_as_an_event(trained: TestClient) -> None:
    rollback(trained, "m", 2)
    events = trained.get("/v1/models/m/events").json()["events"]
    last = events[-1]
    assert (last["kind"], last["version"]) == ("rollback", 2)
    assert last["data"]["from_version"] == 1


def test_rollback_keeps_every_version(trained: TestClient) -> None:
    rollback(trained, "m", 1)
    versions = trained.get("/v1/models/m/versions").json()["versions"]
    assert [(v["version"], v["status"]) for v in versions] == [
        (1, "ready"),
        (2, "ready"),
        (3, "ready"),
    ]
