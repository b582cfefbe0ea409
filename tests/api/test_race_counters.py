"""A race's counters through leader changes: the model's step and samples never go back, a
round runs every `eval_every` model steps whichever candidate leads, the Prometheus counters
never decrease, a retired candidate's curve ends where it was retired, and versions follow
the step. The race is the one of docs/learning.md ("Tuning on a stream"); a drift reopens it,
and a halving then hands the head to a candidate that has trained only since the reopening."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits

from tests.factories import events, fit, model_state

DOCUMENTED_RACE: dict[str, Any] = {
    "name": "digits",
    "spec": {"task": "classification", "inputs": 64, "outputs": 10, "hidden": [64]},
    "optimizer": {"name": "adam", "lr": 0.003},
    "search": {
        "variations": [
            {}, {"hidden": [2]}, {"hidden": [512, 512], "optimizer.lr": 0.01},
            {"hidden": [32], "dropout": 0.2}, {"optimizer.lr": 0.03}, {"activation": "tanh"},
        ],
        "budget": 5, "survivors": 1,
    },
}  # fmt: skip
CHUNK = 128


class Counters:
    """What the client sees after each batch, checked never to go back."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.seen = {"step": 0, "samples_seen": 0, "steps_total": 0.0, "samples_total": 0.0}

    def check(self, answer: dict[str, Any]) -> None:
        state = model_state(self.client, "digits")
        assert (state["step"], state["samples_seen"]) == (answer["step"], answer["samples_seen"])
        now = {
            "step": answer["step"], "samples_seen": answer["samples_seen"],
            "steps_total": self._prometheus("gradual_training_steps_total"),
            "samples_total": self._prometheus("gradual_training_samples_total"),
        }  # fmt: skip
        assert all(now[k] >= self.seen[k] for k in now), (self.seen, now)
        self.seen = now

    def _prometheus(self, family: str) -> float:
        lines = self.client.get("/metrics").text.splitlines()
        return float(next(x for x in lines if x.startswith(f"{family}{{")).rsplit(" ", 1)[1])


def digits_batches(*, passes: int, moved: bool) -> list[dict[str, Any]]:
    """Shuffled passes of digits, 128 rows a batch; `moved`: every label shifted by one."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = np.concatenate([rng.permutation(len(y)) for _ in range(passes)])
    x, y = x[order], (y[order] + int(moved)) % 10
    starts = range(0, len(y), CHUNK)
    return [
        {"inputs": x[i : i + CHUNK].tolist(), "targets": y[i : i + CHUNK].tolist()} for i in starts
    ]


def stream_until(
    client: TestClient, counters: Counters, lines: list[dict[str, Any]], done: Any
) -> None:
    for line in lines:
        counters.check(fit(client, "digits", line))
        if done():
            return
    raise AssertionError("the stream ended first")


@pytest.mark.slow
def test_counters_never_go_back_when_a_reopened_candidate_takes_the_lead(
    client: TestClient,
) -> None:
    assert client.post("/v1/models", json=DOCUMENTED_RACE).status_code == 201
    counters = Counters(client)
    stopped = lambda: model_state(client, "digits")["state"] == "stopped"  # noqa: E731
    stream_until(client, counters, digits_batches(passes=4, moved=False), stopped)
    reopened = lambda: bool(events(client, "digits", "race_reopened"))  # noqa: E731
    moved = digits_batches(passes=3, moved=True)
    stream_until(client, counters, moved, reopened)
    at_reopening = model_state(client, "digits")["step"]

    def new_leader() -> bool:
        halvings = events(client, "digits", "race_halved")
        return any(h["data"]["step"] > at_reopening for h in halvings)

    leader_before = events(client, "digits", "race_halved")[-1]["data"]["leader"]
    stream_until(client, counters, moved, new_leader)
    assert events(client, "digits", "race_halved")[-1]["data"]["leader"] != leader_before
    for line in moved[:8]:
        counters.check(fit(client, "digits", line))

    rounds = [e["data"]["step"] for e in events(client, "digits", "round")]
    assert rounds == sorted(rounds)
    after = [s for s in rounds if s > at_reopening]
    assert all(b - a <= 2 * 4 for a, b in itertools.pairwise(after)), after
    versions = client.get("/v1/models/digits/versions").json()["versions"]
    steps = [v["step"] for v in sorted(versions, key=lambda v: v["version"])]
    assert steps == sorted(steps)
    for candidate in client.get("/v1/models/digits/candidates").json()["candidates"]:
        if candidate["retired_at"] is not None and candidate["history"]:
            assert candidate["history"][-1]["step"] <= candidate["retired_at"]["step"]
