"""A spec too large for memory is a 422 naming `spec.hidden`, never an allocation attempt."""

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
