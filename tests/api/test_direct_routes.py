"""Predict and partial-fit without a query string take the direct path (service.api.direct);
with one they take the routes. Both give the same answers and count under the same route."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import labelled, model_body, rows

M = "/v1/models"


def test_the_direct_path_and_the_route_give_the_same_predictions(client: TestClient) -> None:
    assert client.post(M, json=model_body("m")).status_code == 201
    body = {"inputs": rows(5)}
    direct = client.post(f"{M}/m/predict", json=body)
    routed = client.post(f"{M}/m/predict?version=1", json=body)
    assert (direct.status_code, routed.status_code) == (200, 200)
    assert direct.json() == routed.json()
    text = client.get("/metrics").text
    route = 'route="/v1/models/{name}/predict"'
    assert f'gradual_http_requests_total{{method="POST",{route},status="200"}} 2.0' in text


def test_a_direct_partial_fit_trains_once_and_answers_like_the_route(client: TestClient) -> None:
    assert client.post(M, json=model_body("m")).status_code == 201
    direct = client.post(f"{M}/m/partial-fit", json=labelled(32, seed=1))
    routed = client.post(f"{M}/m/partial-fit?wait=true", json=labelled(32, seed=2))
    assert (direct.status_code, routed.status_code) == (200, 200)
    assert set(direct.json()) == set(routed.json())
    assert client.get(f"{M}/m").json()["samples_seen"] == 64


def test_direct_path_errors_go_through_the_error_table(client: TestClient) -> None:
    missing = client.post(f"{M}/nobody/predict", json={"inputs": rows(1)})
    assert (missing.status_code, missing.json()["code"]) == (404, "model_not_found")
    assert client.post(M, json=model_body("m")).status_code == 201
    bad = client.post(f"{M}/m/predict", json={"inputs": [[1.0, 2.0]]})
    assert (bad.status_code, bad.json()["field"]) == (422, "inputs")
    garbage = client.post(
        f"{M}/m/predict", content=b"{", headers={"content-type": "application/json"}
    )
    assert (garbage.status_code, garbage.json()["code"]) == (400, "malformed_body")
