"""A partial-fit is a transaction: a refused batch leaves the head exactly as it was.

Each scenario trains a model `m` and a control `c` (same spec, same seed) on the same good
batch, then sends `m` a batch its step refuses. Afterwards `m` must be indistinguishable from
`c`, bit for bit: parameters, the normalizer's statistics (buffers), the optimizer's state
and the dropout generator, all of which a refused step had already moved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from tests.factories import fit, head_outputs, labels, model_body, predicted, rows

PROBE = rows(12, seed=99)


def shifted(batch: list[list[float]], by: float) -> list[list[float]]:
    return [[value + by for value in row] for row in batch]


def scaled(batch: list[list[float]], by: float) -> list[list[float]]:
    return [[value * by for value in row] for row in batch]


@dataclass(frozen=True)
class Refusal:
    """A model, a good batch, a batch its step refuses, and why."""

    body: dict[str, Any]
    good: dict[str, Any]
    bad: dict[str, Any]
    reason: str
    named: str = "inputs"  # the field the refusal names
    settings: dict[str, float] = field(default_factory=dict)


SCENARIOS = {
    # Targets of 1e9 make a gradient far beyond max_grad_norm; the inputs, shifted by 100,
    # would also have moved the normalizer's running mean. Adam's moments and step count
    # and the dropout generator move too.
    "exploding-gradient": Refusal(
        body=model_body(task="regression", outputs=1, dropout=0.2, seed=3, normalize_target=False),
        good={"inputs": rows(32, seed=1), "targets": [0.5] * 32},
        bad={"inputs": shifted(rows(16, seed=2), 100.0), "targets": [1e9] * 16},
        reason="max_grad_norm",
    ),
    # With targets learned standardized, the same batch is refused before any step: its
    # targets lie far beyond every target the statistics have seen.
    "outlying-targets": Refusal(
        body=model_body(task="regression", outputs=1, dropout=0.2, seed=3),
        good={"inputs": rows(32, seed=1), "targets": [0.5 + i / 64 for i in range(32)]},
        bad={"inputs": shifted(rows(16, seed=2), 100.0), "targets": [1e9] * 16},
        reason="standard deviations",
        named="targets",
    ),
    # Inputs of ~1e4 push SGD's weights (and its momentum buffers) past max_weight_abs.
    "weight-beyond-bound": Refusal(
        body=model_body(
            optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
            normalize=False,
            dropout=0.2,
            seed=3,
        ),
        good={"inputs": rows(32, seed=1), "targets": labels(32, seed=1)},
        bad={"inputs": scaled(rows(16, seed=2), 1e4), "targets": labels(16, seed=2)},
        reason="beyond ±5",
        settings={"max_weight_abs": 5.0, "max_grad_norm": 1e30},
    ),
}
NEXT = {
    "exploding-gradient": {"inputs": rows(32, seed=4), "targets": [-0.5] * 32},
    "outlying-targets": {"inputs": rows(32, seed=4), "targets": [0.2] * 32},
    "weight-beyond-bound": {"inputs": rows(32, seed=4), "targets": labels(32, seed=4)},
}


@dataclass(frozen=True)
class Refused:
    client: TestClient
    scenario: str
    response: httpx.Response


@pytest.fixture(params=sorted(SCENARIOS))
def refused(
    request: pytest.FixtureRequest,
    start: Callable[..., TestClient],
    make_settings: Callable[..., Settings],
) -> Refused:
    """`m` and its control `c`, both trained on the good batch; `m` then sent the bad one."""
    scenario = SCENARIOS[request.param]
    client = start(make_settings(**scenario.settings))
    for name in ("m", "c"):
        assert client.post("/v1/models", json={**scenario.body, "name": name}).status_code == 201
        fit(client, name, scenario.good)
    response = client.post("/v1/models/m/partial-fit", json=scenario.bad)
    return Refused(client, request.param, response)


def test_refused_batch_is_a_422_batch_rejected_saying_why(refused: Refused) -> None:
    assert refused.response.status_code == 422
    body = refused.response.json()
    assert (body["code"], body["field"]) == ("batch_rejected", SCENARIOS[refused.scenario].named)
    assert SCENARIOS[refused.scenario].reason in body["message"]


def test_refused_batch_leaves_the_head_predicting_like_the_control(refused: Refused) -> None:
    client = refused.client
    assert head_outputs(client, "m", PROBE) == head_outputs(client, "c", PROBE)


def test_refused_batch_leaves_the_served_predictions_unchanged(refused: Refused) -> None:
    client = refused.client
    assert predicted(client, "m", PROBE) == predicted(client, "c", PROBE)


def test_next_good_batch_after_a_refusal_trains_exactly_like_the_control(
    refused: Refused,
) -> None:
    client, batch = refused.client, NEXT[refused.scenario]
    after_refusal, control = fit(client, "m", batch), fit(client, "c", batch)
    assert after_refusal["train_loss"] == control["train_loss"]
    assert head_outputs(client, "m", PROBE) == head_outputs(client, "c", PROBE)


def test_refused_batch_does_not_advance_step_or_samples_seen(refused: Refused) -> None:
    model, control = (refused.client.get(f"/v1/models/{n}").json() for n in ("m", "c"))
    assert (model["step"], model["samples_seen"]) == (control["step"], control["samples_seen"])
    assert model["step"] > 0


def test_refusal_undoes_the_good_mini_batches_before_the_bad_one(client: TestClient) -> None:
    scenario = SCENARIOS["exploding-gradient"]
    for name in ("m", "c"):
        client.post("/v1/models", json={**scenario.body, "name": name})
    good, bad = scenario.good, scenario.bad
    # batch_size is 16: the first 16 rows are a step of their own, taken before the bad one.
    mixed = {
        "inputs": good["inputs"][:16] + bad["inputs"],
        "targets": good["targets"][:16] + bad["targets"],
    }
    response = client.post("/v1/models/m/partial-fit", json=mixed)
    assert response.json()["code"] == "batch_rejected"
    assert client.get("/v1/models/m").json()["step"] == 0
    assert head_outputs(client, "m", PROBE) == head_outputs(client, "c", PROBE)


def test_a_bad_batch_would_have_changed_the_head_had_it_been_allowed(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    """The other tests could not fail if a refused batch left no trace anyway: show it would."""
    scenario = SCENARIOS["exploding-gradient"]
    client = start(make_settings(max_grad_norm=1e30, max_weight_abs=1e30))
    for name in ("m", "c"):
        client.post("/v1/models", json={**scenario.body, "name": name})
        fit(client, name, scenario.good)
    fit(client, "m", scenario.bad)
    assert head_outputs(client, "m", PROBE) != head_outputs(client, "c", PROBE)
