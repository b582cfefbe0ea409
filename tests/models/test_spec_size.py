"""A spec too large for memory is a 422 naming the field, never an allocation attempt."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from models.spec import MAX_PARAMETERS
from tests.factories import model_body


@pytest.mark.parametrize(
    ("inputs", "hidden", "outputs"),
    [(4, [16_384] * 16, 3), (65_536, [], 65_536), (65_536, [1_024], 2)],
)
def test_a_network_over_the_parameter_budget_is_refused(
    client: TestClient, inputs: int, hidden: list[int], outputs: int
) -> None:
    body = model_body("big", inputs=inputs, hidden=hidden, outputs=outputs)
    response = client.post("/v1/models", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == "spec.hidden"
    assert f"{MAX_PARAMETERS:,}" in response.json()["message"]


def test_a_network_within_the_budget_is_created(client: TestClient) -> None:
    body = model_body("wide", inputs=1_000, hidden=[1_024, 1_024], outputs=10)
    assert client.post("/v1/models", json=body).status_code == 201


def test_a_validation_buffer_too_large_for_memory_is_refused(client: TestClient) -> None:
    """Found by schemathesis: 163,029 buffered rows of 65,536 features asked for 42 GB."""
    body = model_body("wide", inputs=65_536, hidden=[8], outputs=8)
    body["training"]["buffer_size"] = 163_029
    response = client.post("/v1/models", json=body)
    assert (response.status_code, response.json()["field"]) == (422, "training.buffer_size")
    body["training"]["buffer_size"] = 500
    assert client.post("/v1/models", json=body).status_code == 201
    patched = client.patch("/v1/models/wide/training", json={"buffer_size": 100_000})
    assert (patched.status_code, patched.json()["field"]) == (422, "training.buffer_size")
