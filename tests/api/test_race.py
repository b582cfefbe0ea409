"""Tuning on a stream: candidates race side by side, successive halving retires the worse half,
the leader is served through gated promotion, and the race survives a crash bit for bit."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.learning.race.candidates import Race
from tests.factories import (
    batches,
    blobs,
    crash_image,
    digits_split,
    events,
    fit,
    model_body,
    model_state,
)

Start = Callable[..., TestClient]
# Pinned training with a validation share, and a round after every 40-row batch.
RACING = {"holdout": 0.25, "eval_every": 2}

DIGITS_VARIATIONS: list[dict[str, Any]] = [
    {},  # the base: [64] relu, adam 0.003
    {"hidden": [2]},  # deliberately tiny: underfits
    {"hidden": [512, 512], "optimizer.lr": 0.01},  # deliberately oversized: overfits
    {"hidden": [32], "dropout": 0.2},
    {"optimizer.lr": 0.03},
    {"activation": "tanh"},
]
DIGITS_EPOCHS = 2


def race_body(
    name: str, search: dict[str, Any], *, training: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    return model_body(name, training=RACING | (training or {}), **fields) | {"search": search}


def digits_body(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "spec": {"task": "classification", "inputs": 64, "outputs": 10, "hidden": [64]},
        "optimizer": {"name": "adam", "lr": 0.003},
        "training": {"eval_every": 4, "replay_ratio": 1.0},  # service defaults otherwise
        "seed": 0,
        **fields,
    }


def alone_body(name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The body of a lone model with one candidate's overrides applied to the base."""
    body = digits_body(name)
    for key, value in overrides.items():
        section, _, field = key.rpartition(".")
        if key == "weight_decay":
            section = "optimizer"
        target = body[section or "spec"] if key != "batch_size" else body["training"]
        target[field] = value
    return body


def stream(client: TestClient, name: str, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    for _ in range(epochs):
        for batch in batches(x, y, 64):
            fit(client, name, batch)


def accuracy_of(client: TestClient, name: str, x: np.ndarray, y: np.ndarray) -> float:
    response = client.post(f"/v1/models/{name}/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200, response.text
    return float(np.mean(np.array(response.json()["predictions"]) == y))


def candidates(client: TestClient, name: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/models/{name}/candidates")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["candidates"]
    return found


@pytest.mark.slow
def test_race_retires_the_oversized_and_the_tiny_network_and_serves_a_winner_as_good_as_alone(
    client: TestClient,
) -> None:
    x_train, x_test, y_train, y_test = digits_split()
    search = {"variations": DIGITS_VARIATIONS, "budget": 5}
    assert client.post("/v1/models", json=digits_body("race", search=search)).status_code == 201
    stream(client, "race", x_train, y_train, DIGITS_EPOCHS)

    found = candidates(client, "race")
    tiny, oversized = found[1], found[2]
    assert (tiny["state"], oversized["state"]) == ("retired", "retired")
    assert tiny["history"][-1]["val_accuracy"] < 0.5  # underfit: it never learned the task
    losses = [point["val_loss"] for point in oversized["history"]]
    assert losses[-1] > 2 * min(losses)  # overfit: its validation loss rose after its best
    assert [c["state"] for c in found].count("live") == 1
    assert all(len(c["history"]) >= 5 for c in found)  # every curve is recorded
    winner = next(c for c in found if c["leader"])
    assert model_state(client, "race")["spec"] == winner["spec"]

    alone = []
    for index, overrides in enumerate(DIGITS_VARIATIONS):
        assert client.post("/v1/models", json=alone_body(f"a{index}", overrides)).status_code == 201
        stream(client, f"a{index}", x_train, y_train, DIGITS_EPOCHS)
        alone.append(accuracy_of(client, f"a{index}", x_test, y_test))
    raced = accuracy_of(client, "race", x_test, y_test)
    assert raced >= max(alone) - 0.01, (raced, alone)


def test_halving_events_explain_each_retirement_and_old_versions_keep_their_architecture(
    client: TestClient,
) -> None:
    variations = {"hidden": [[1], [32]], "optimizer.lr": [0.001, 0.05]}  # a 2 × 2 grid
    body = race_body("m", {"variations": variations, "budget": 2}, hidden=[8])
    assert client.post("/v1/models", json=body).status_code == 201
    x, y = blobs(400, seed=3)
    first = client.post("/v1/models/m/predict", json={"inputs": x[:5].tolist(), "version": 1})
    for batch in batches(x, y, 40):
        fit(client, "m", batch)
    halved = events(client, "m", "race_halved")
    assert [len(e["data"]["retired"]) for e in halved] == [2, 1]
    found = candidates(client, "m")
    retired = {c["index"]: c["retired_at"] for c in found if c["state"] == "retired"}
    assert sorted(retired) == sorted(r["index"] for e in halved for r in e["data"]["retired"])
    assert {r["round"] for r in retired.values()} == {2, 4}
    # Version 1 is candidate 0's first weights ([1] hidden): it still loads and predicts the same.
    again = client.post("/v1/models/m/predict", json={"inputs": x[:5].tolist(), "version": 1})
    assert again.json() == first.json()
    leader = next(c for c in found if c["leader"])
    assert leader["spec"]["hidden"] == [32]  # the [1] networks cannot compete
    refused = client.post("/v1/models/m/rollback", json={"version": 1})
    assert (refused.status_code, refused.json()["field"]) == (422, "version")


def test_retired_candidates_release_their_parameters(client: TestClient) -> None:
    search = {"variations": {"hidden": [[4], [16], [32]]}, "budget": 1}
    body = race_body("m", search)
    assert client.post("/v1/models", json=body).status_code == 201
    race: Race = client.app.state.hub.live("m").learner.race  # type: ignore[attr-defined]
    watched = {
        c.index: [weakref.ref(p) for p in c.head.network.parameters()]  # type: ignore[union-attr]
        for c in race.candidates
    }
    x, y = blobs(120, seed=4)
    for batch in batches(x, y, 40):
        fit(client, "m", batch)
    gc.collect()
    states = {c["index"]: c["state"] for c in candidates(client, "m")}
    assert sorted(states.values()) == ["live", "retired", "retired"]
    for index, refs in watched.items():
        alive = [ref() is not None for ref in refs]
        assert alive == [states[index] == "live"] * len(refs), index


@pytest.mark.parametrize(
    ("search", "field"),
    [
        ({"variations": {"momentum": [0.1, 0.9]}}, "search.variations.momentum"),
        ({"variations": [{}, {"hidden": [4], "loss": "mse"}]}, "search.variations.1.loss"),
        ({"variations": [{}, {"activation": "nope"}]}, "search.variations.1.activation"),
        ({"variations": [{}, {"optimizer.lr": -1}]}, "search.variations.1.lr"),
        ({"variations": [{}, {"batch_size": 0}]}, "search.variations.1.batch_size"),
        ({"variations": {"hidden": []}}, "search.variations.hidden"),
        ({"variations": [{}]}, "search.variations"),
        ({"variations": {"hidden": [[n] for n in range(1, 6)], "dropout": [0, 0.1, 0.2, 0.3]}},
         "search.variations"),
        ({"variations": [{}, {"dropout": 0.1}], "survivors": 2}, "search.survivors"),
        ({"variations": [{}, {"dropout": 0.1}], "budget": 0}, "search.budget"),
    ],
    ids=["unknown-field", "fixed-field", "bad-activation", "bad-lr", "bad-batch-size",
         "empty-values", "one-candidate", "grid-of-20", "survivors", "budget"],
)  # fmt: skip
def test_bad_search_section_is_refused_naming_the_field(
    client: TestClient, search: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/models", json=race_body("m", search))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert client.get("/v1/models/m").status_code == 404


def test_model_without_a_search_has_no_candidates(client: TestClient) -> None:
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    assert candidates(client, "m") == []
    assert client.get("/v1/models/nope/candidates").status_code == 404


def patch_training(client: TestClient, changes: dict[str, Any]) -> None:
    response = client.patch("/v1/models/m/training", json=changes)
    assert response.status_code == 200, response.text


def test_crash_image_restarts_the_race_bit_for_bit(
    start: Start, settings: Settings, tmp_path: Path
) -> None:
    variations = [
        {}, {"hidden": [2]}, {"optimizer.lr": 0.05, "dropout": 0.3},
        {"optimizer.name": "sgd", "batch_size": 8, "weight_decay": 0.01},
    ]  # fmt: skip
    body = race_body("m", {"variations": variations, "budget": 2, "survivors": 2})
    original = start()
    assert original.post("/v1/models", json=body).status_code == 201
    x, y = blobs(800, seed=5)
    stream_batches = batches(x, y, 40)
    for batch in stream_batches[:5]:  # rounds 1..5: one halving, 2 candidates retired
        fit(original, "m", batch)
    # No rounds, so no transitions: these batches are in the log only, after the snapshot,
    # and a restart must replay the leader's and the follower's steps exactly.
    patch_training(original, {"eval_every": 1000})
    for batch in stream_batches[5:9]:
        fit(original, "m", batch)
    copy = start(crash_image(settings, tmp_path / "copy"))
    assert candidates(copy, "m") == candidates(original, "m")
    assert model_state(copy, "m") == model_state(original, "m")
    for client in (original, copy):
        patch_training(client, {"eval_every": 2})
    for batch in stream_batches[9:]:
        assert fit(copy, "m", batch) == fit(original, "m", batch)
    found = candidates(copy, "m")
    assert found == candidates(original, "m")  # the follower's scores too, round for round
    assert [c["state"] for c in found].count("live") == 2
    assert len(next(c for c in found if c["state"] == "live" and not c["leader"])["history"]) > 6


def test_drift_after_an_early_stop_reopens_the_race(
    client: TestClient,
) -> None:
    search = {"variations": {"hidden": [[4], [16], [32]]}, "budget": 1}
    body = race_body("m", search, training={"stopping_threshold": 0.75, "buffer_size": 200})
    assert client.post("/v1/models", json=body).status_code == 201
    x, y = blobs(2000, seed=7)
    for start in range(0, 2000, 40):
        rows = {"inputs": x[start : start + 40].tolist(), "targets": y[start : start + 40].tolist()}
        if fit(client, "m", rows)["state"] == "stopped":
            break
    assert model_state(client, "m")["state"] == "stopped"
    assert [c["state"] for c in candidates(client, "m")].count("retired") == 2
    moved = {"inputs": x[:200].tolist(), "targets": ((y[:200] + 1) % 3).tolist()}
    fit(client, "m", moved)  # not trained on: the world moved, so training resumes
    assert [e["data"]["reason"] for e in events(client, "m", "resume")] == ["drift"]
    reopened = events(client, "m", "race_reopened")
    assert len(reopened) == 1
    assert sorted(reopened[0]["data"]["reopened"]) == sorted(
        c["index"] for c in candidates(client, "m") if not c["leader"]
    )
    assert [(c["state"], c["retired_at"]) for c in candidates(client, "m")] == [("live", None)] * 3
