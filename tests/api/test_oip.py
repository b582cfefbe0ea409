"""The Open Inference Protocol (/v2) over HTTP: metadata, readiness, infer, and its errors.

Infer must answer what native predict answers for the same rows; every refusal is the
protocol's `{"error": message}`, while /v1 keeps `{code, message, field}`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from tests.db.test_consistency import written
from tests.factories import batch, blobs, checkpoint, fit, model_body, rows


@pytest.fixture
def model(client: TestClient) -> TestClient:
    """The app with `m`: a 3-class classifier over 4 features."""
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    return client


def tensor(data: Any, shape: list[int], datatype: str = "FP32", name: str = "inputs") -> Any:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def infer_body(x: list[list[float]], **fields: Any) -> dict[str, Any]:
    """An infer request carrying `x` flat, row-major, as FP32."""
    flat = [value for row in x for value in row]
    return {"inputs": [tensor(flat, [len(x), len(x[0])])], **fields}


def infer(client: TestClient, name: str, body: Any, version: int | None = None) -> Any:
    at = f"/versions/{version}" if version is not None else ""
    response = client.post(f"/v2/models/{name}{at}/infer", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def native(client: TestClient, name: str, x: list[list[float]], version: int | None = None) -> Any:
    request: dict[str, Any] = {"inputs": x} | ({"version": version} if version else {})
    response = client.post(f"/v1/models/{name}/predict", json=request)
    assert response.status_code == 200, response.text
    return response.json()


def by_name(body: Any) -> dict[str, Any]:
    return {output["name"]: output for output in body["outputs"]}


def flat(values: list[Any]) -> list[Any]:
    return np.asarray(values).reshape(-1).tolist()


def assert_protocol_error(response: httpx.Response, status: int, mentions: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"]
    assert mentions in body["error"]


# -- server -----------------------------------------------------------------------------------


def test_server_metadata_names_the_server_and_its_version(client: TestClient) -> None:
    response = client.get("/v2")
    assert response.status_code == 200
    assert response.json() == {
        "name": "gradual", "version": "0.1.0", "extensions": ["binary_tensor_data"],
    }  # fmt: skip


def test_server_is_live_and_ready_once_started(client: TestClient) -> None:
    live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


# -- metadata ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "outputs", "declared"),
    [
        (
            "classification", 3,
            [("predictions", "INT64", [-1]), ("probabilities", "FP32", [-1, 3])],
        ),
        ("binary", 1, [("predictions", "INT64", [-1]), ("probabilities", "FP32", [-1, 2])]),
        ("regression", 1, [("predictions", "FP32", [-1])]),
        ("regression", 2, [("predictions", "FP32", [-1, 2])]),
    ],
)  # fmt: skip
def test_metadata_declares_the_input_and_the_task_outputs(
    client: TestClient, task: str, outputs: int, declared: list[tuple[str, str, list[int]]]
) -> None:
    body = model_body("t", task=task, inputs=5, outputs=outputs)
    assert client.post("/v1/models", json=body).status_code == 201
    metadata = client.get("/v2/models/t").json()
    assert (metadata["name"], metadata["platform"], metadata["versions"]) == ("t", "pytorch", ["1"])
    assert metadata["inputs"] == [{"name": "inputs", "datatype": "FP32", "shape": [-1, 5]}]
    found = [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]]
    assert found == declared


def test_metadata_lists_every_checkpointed_version_as_a_string(model: TestClient) -> None:
    checkpoint(model, "m")
    assert model.get("/v2/models/m").json()["versions"] == ["1", "2"]
    assert model.get("/v2/models/m/versions/2").json()["versions"] == ["1", "2"]


def test_model_and_its_versions_are_ready(model: TestClient) -> None:
    response = model.get("/v2/models/m/ready")
    assert (response.status_code, response.json()) == (200, {"name": "m", "ready": True})
    response = model.get("/v2/models/m/versions/1/ready")
    assert (response.status_code, response.json()) == (200, {"name": "m", "ready": True})


# -- infer ------------------------------------------------------------------------------------


def test_infer_with_flat_data_answers_what_native_predict_answers(model: TestClient) -> None:
    x = rows(6)
    body = infer(model, "m", infer_body(x))
    expected = native(model, "m", x)
    assert (body["model_name"], body["model_version"]) == ("m", "1")
    outputs = by_name(body)
    assert outputs["predictions"] == {
        "name": "predictions", "shape": [6], "datatype": "INT64",
        "data": expected["predictions"],
    }  # fmt: skip
    assert outputs["probabilities"] == {
        "name": "probabilities", "shape": [6, 3], "datatype": "FP32",
        "data": flat(expected["probabilities"]),
    }  # fmt: skip


def test_nested_data_is_read_row_major_like_flat_data(model: TestClient) -> None:
    x = rows(5)
    nested = {"inputs": [tensor(x, [5, 4])]}
    assert infer(model, "m", nested)["outputs"] == infer(model, "m", infer_body(x))["outputs"]


@pytest.mark.parametrize(("task", "outputs"), [("binary", 1), ("regression", 1), ("regression", 3)])
def test_infer_matches_native_predict_for_every_task(
    client: TestClient, task: str, outputs: int
) -> None:
    client.post("/v1/models", json=model_body("t", task=task, outputs=outputs))
    x = rows(7)
    found = by_name(infer(client, "t", infer_body(x)))
    expected = native(client, "t", x)
    assert found["predictions"]["data"] == flat(expected["predictions"])
    assert found["predictions"]["shape"] == ([7] if outputs == 1 else [7, outputs])
    if expected["probabilities"] is not None:
        assert found["probabilities"]["data"] == flat(expected["probabilities"])
    else:
        assert "probabilities" not in found


@pytest.mark.parametrize("datatype", ["FP64", "INT64", "INT32", "UINT8"])
def test_other_numeric_datatypes_are_converted_to_fp32(model: TestClient, datatype: str) -> None:
    x = [[1, 0, 2, 3], [4, 5, 0, 1]]
    found = infer(model, "m", {"inputs": [tensor(flat(x), [2, 4], datatype)]})
    assert found["outputs"] == infer(model, "m", infer_body(x))["outputs"]


def test_infer_on_a_version_uses_that_version(model: TestClient) -> None:
    x, y = blobs(64)
    fit(model, "m", batch(x, y))
    assert checkpoint(model, "m") == 2
    probe = rows(4, seed=3)
    answers = {v: infer(model, "m", infer_body(probe), version=v) for v in (1, 2)}
    for version, body in answers.items():
        assert body["model_version"] == str(version)
        expected = native(model, "m", probe, version)["probabilities"]
        assert by_name(body)["probabilities"]["data"] == flat(expected)
    assert answers[1]["outputs"] != answers[2]["outputs"]


def test_requested_outputs_alone_are_returned_in_the_order_named(model: TestClient) -> None:
    x = rows(3)
    only = infer(model, "m", infer_body(x, outputs=[{"name": "probabilities"}]))
    assert [o["name"] for o in only["outputs"]] == ["probabilities"]
    both = [
        {"name": "probabilities"},
        {"name": "predictions", "parameters": {"binary_data": False}},
    ]
    ordered = infer(model, "m", infer_body(x, outputs=both))
    assert [o["name"] for o in ordered["outputs"]] == ["probabilities", "predictions"]


def test_request_id_is_echoed_and_parameters_are_ignored(model: TestClient) -> None:
    body = infer(model, "m", infer_body(rows(2), id="42", parameters={"priority": 1}))
    assert body["id"] == "42"
    assert "id" not in infer(model, "m", infer_body(rows(2)))


def test_body_without_content_type_is_read_as_json_like_tritons_client(model: TestClient) -> None:
    """tritonclient.http sends its JSON with no Content-Type."""
    x = rows(2)
    response = model.post("/v2/models/m/infer", content=json.dumps(infer_body(x)).encode())
    assert response.status_code == 200, response.text
    assert response.json()["outputs"] == infer(model, "m", infer_body(x))["outputs"]


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/models/nope"),
        ("GET", "/v2/models/nope/ready"),
        ("GET", "/v2/models/nope/versions/1"),
        ("GET", "/v2/models/nope/versions/1/ready"),
        ("POST", "/v2/models/nope/infer"),
        ("POST", "/v2/models/nope/versions/1/infer"),
        ("GET", "/v2/models/m/versions/9"),
        ("GET", "/v2/models/m/versions/9/ready"),
        ("POST", "/v2/models/m/versions/9/infer"),
    ],
)
def test_unknown_model_or_version_is_404(model: TestClient, method: str, path: str) -> None:
    response = model.request(method, path, json=infer_body(rows(2)))
    assert_protocol_error(response, 404, "nope" if "nope" in path else "version 9")


def test_unknown_model_is_404_before_its_body_is_read(model: TestClient) -> None:
    response = model.post("/v2/models/nope/infer", content=b"{nope")
    assert_protocol_error(response, 404, "no model named 'nope'")


def test_a_model_that_failed_to_load_is_not_ready_at_any_version(
    start: Callable[..., TestClient], settings: Settings
) -> None:
    _, files, store = written(settings)
    store.remove(files[1])  # the served version's weights: the model cannot load
    client = start()
    for path in ("/v2/models/m/ready", "/v2/models/m/versions/1/ready"):
        response = client.get(path)
        assert (response.status_code, response.json()) == (503, {"name": "m", "ready": False})


def with_input(**changes: Any) -> dict[str, Any]:
    return {"inputs": [tensor(flat(rows(2)), [2, 4]) | changes]}


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (with_input(datatype="BYTES"), "datatype 'BYTES'"),
        (with_input(datatype="BOOL"), "datatype 'BOOL'"),
        (with_input(datatype="fp32"), "datatype 'fp32'"),
        (with_input(shape=[3, 4]), "shape [3, 4] needs 12"),
        (with_input(shape=[2, 5]), "shape must be [N, 4]"),
        (with_input(shape=[8]), "shape must be [N, 4]"),
        (with_input(shape=[-2, 4]), "shape"),
        (with_input(name="input0"), "'inputs'"),
        (with_input(data=[[1, 2, 3, 4], [5, 6, 7]]), "nested evenly"),
        (with_input(data=["a", "b", "c", "d"], shape=[1, 4]), "only numbers"),
        (with_input(datatype="INT32", data=[0.5, 1, 2, 3], shape=[1, 4]), "whole numbers"),
        (with_input(data=[1, 2, 3, 1e30], shape=[1, 4]), "beyond"),
        (with_input(data=[], shape=[0, 4]), "empty"),
        ({"inputs": []}, "'inputs'"),
        ({"inputs": [tensor([1, 2, 3, 4], [1, 4])] * 2}, "one input"),
        ({}, "inputs: Field required"),
        ({"inputs": [tensor([1, 2, 3, 4], [1, 4])], "colour": 1}, "colour"),
        (infer_body(rows(2), outputs=[{"name": "logits"}]), "no output 'logits'"),
        (infer_body(rows(2), outputs=["predictions"]), "outputs.0"),
    ],
)
def test_bad_infer_request_is_400(model: TestClient, body: Any, mentions: str) -> None:
    assert_protocol_error(model.post("/v2/models/m/infer", json=body), 400, mentions)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_input_is_400(model: TestClient, value: str) -> None:
    body = json.dumps(with_input(data=[1, 2, 3, 0], shape=[1, 4])).replace("0]", f"{value}]")
    response = model.post(
        "/v2/models/m/infer", content=body, headers={"content-type": "application/json"}
    )
    assert_protocol_error(response, 400, "non-finite")


def test_body_that_is_not_json_is_400(model: TestClient) -> None:
    response = model.post(
        "/v2/models/m/infer", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert_protocol_error(response, 400, "not valid JSON")


def test_body_that_is_not_text_is_400(model: TestClient) -> None:
    response = model.post(
        "/v2/models/m/infer", content=b"\xff\xfe\x00", headers={"content-type": "application/json"}
    )
    assert_protocol_error(response, 400, "not valid JSON")


def test_version_that_is_not_a_number_is_400(model: TestClient) -> None:
    assert_protocol_error(model.get("/v2/models/m/versions/v1/ready"), 400, "version")


def test_native_api_keeps_its_own_error_shape(model: TestClient) -> None:
    response = model.post("/v1/models/nope/predict", json={"inputs": rows(1)})
    assert response.status_code == 404
    assert set(response.json()) == {"code", "message", "field"}
    bad = model.post("/v1/models/m/predict", json={"inputs": [[1, 2]]})
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_input")
