"""Every refusal over HTTP: its status, its stable code and the field it names.

Each error body is exactly `{code, message, field}`; the field is what a client fixes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from tests.factories import labels, model_body, rows, with_field

BOTH = pytest.mark.parametrize("database", ["sqlite", "postgres"], indirect=True)
JSON = {"content-type": "application/json"}


def assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "field"}
    assert (body["code"], body["field"]) == (code, field)
    assert body["message"]


@pytest.fixture
def model(client: TestClient) -> TestClient:
    """The app with `m`: a 3-class classifier over 4 features."""
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    return client


def create_model(client: TestClient, task: str, outputs: int) -> None:
    response = client.post("/v1/models", json=model_body("t", task=task, outputs=outputs))
    assert response.status_code == 201, response.text


# -- create: unknown keys, out-of-range values, names, conflicts ------------------------------


@pytest.mark.parametrize("field", ["colour", "spec.hiddn", "optimizer.lrr", "training.batchsize"])
def test_unknown_key_at_any_level_is_refused_naming_it(client: TestClient, field: str) -> None:
    response = client.post("/v1/models", json=with_field(model_body(), field, 1))
    assert_error(response, 422, "invalid_field", field)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spec.dropout", 1.0),
        ("spec.dropout", -0.1),
        ("spec.inputs", 0),
        ("spec.activation", "swish"),
        ("spec.init", "zeros"),
        ("spec.task", "ranking"),
        ("optimizer.name", "nadam"),
        ("optimizer.lr", 0),
        ("optimizer.lr", 100.0),
        ("optimizer.weight_decay", -0.01),
        ("optimizer.momentum", 1.0),
        ("training.batch_size", 0),
        ("training.augment_noise", -1.0),
        ("seed", -1),
    ],
)
def test_out_of_range_value_is_refused_naming_the_field(
    client: TestClient, field: str, value: object
) -> None:
    response = client.post("/v1/models", json=with_field(model_body(), field, value))
    assert_error(response, 422, "invalid_field", field)


def test_hidden_layer_of_zero_neurons_is_refused_naming_the_layer(client: TestClient) -> None:
    response = client.post("/v1/models", json=model_body(hidden=[8, 0]))
    assert_error(response, 422, "invalid_field", "spec.hidden.1")


def test_binary_task_with_two_outputs_is_refused_naming_outputs(client: TestClient) -> None:
    response = client.post("/v1/models", json=model_body(task="binary", outputs=2))
    assert_error(response, 422, "invalid_field", "spec.outputs")


def test_loss_that_does_not_fit_the_task_is_refused_naming_loss(client: TestClient) -> None:
    response = client.post("/v1/models", json=model_body(loss="mse"))
    assert_error(response, 422, "invalid_field", "spec.loss")


def test_nesterov_without_sgd_momentum_is_refused_naming_it(client: TestClient) -> None:
    body = model_body(optimizer={"name": "adam", "nesterov": True})
    assert_error(client.post("/v1/models", json=body), 422, "invalid_field", "optimizer.nesterov")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e400"])
def test_non_finite_hyper_parameter_is_refused_naming_it(
    client: TestClient, literal: bytes
) -> None:
    body = orjson.dumps(model_body()).replace(b'"lr":0.01', b'"lr":' + literal)
    response = client.post("/v1/models", content=body, headers=JSON)
    assert_error(response, 422, "invalid_field", "optimizer.lr")


@pytest.mark.parametrize("name", ["Bad", "-x", "_x", "a" * 65, "../x", "a/b", "a b", ""])
def test_bad_name_is_refused_naming_it(client: TestClient, name: str) -> None:
    assert_error(client.post("/v1/models", json=model_body(name)), 422, "invalid_field", "name")


def test_name_of_64_allowed_characters_is_accepted(client: TestClient) -> None:
    name = "a0_.-" + "z" * 59
    assert client.post("/v1/models", json=model_body(name)).status_code == 201
    assert client.get(f"/v1/models/{name}").json()["name"] == name


def test_bad_name_in_the_path_is_refused_naming_it(client: TestClient) -> None:
    assert_error(client.get("/v1/models/Bad"), 422, "invalid_field", "name")


@BOTH
def test_existing_name_is_a_409_and_leaves_the_model_untouched(client: TestClient) -> None:
    client.post("/v1/models", json=model_body("m", seed=1))
    response = client.post("/v1/models", json=model_body("m", seed=2, hidden=[4]))
    assert_error(response, 409, "model_exists", "name")
    model = client.get("/v1/models/m").json()
    assert (model["seed"], model["spec"]["hidden"]) == (1, [16])
    assert len(client.get("/v1/models/m/versions").json()["versions"]) == 1


# -- predict and partial-fit: the inputs ------------------------------------------------------


def batch_for(endpoint: str, inputs: Any) -> dict[str, Any]:
    """A predict body, or a partial-fit body whose targets are fine for the rows it has."""
    if endpoint == "predict":
        return {"inputs": inputs}
    count = len(inputs) if isinstance(inputs, list) else 1
    return {"inputs": inputs, "targets": labels(count)}


ENDPOINTS = pytest.mark.parametrize("endpoint", ["predict", "partial-fit"])


@ENDPOINTS
@pytest.mark.parametrize(
    "inputs",
    [
        pytest.param([[1.0, 2.0, 3.0]], id="too-few-features"),
        pytest.param([[1.0, 2.0, 3.0, 4.0, 5.0]], id="too-many-features"),
        pytest.param([], id="empty"),
        pytest.param([["a", "b", "c", "d"]], id="strings"),
        pytest.param([[True, False, True, False]], id="booleans"),
        pytest.param([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0]], id="ragged"),
        pytest.param([1.0, 2.0, 3.0, 4.0], id="flat"),
        pytest.param([[[1.0, 2.0, 3.0, 4.0]]], id="nested"),
        pytest.param("1,2,3,4", id="not-a-list"),
        pytest.param(None, id="null"),
        pytest.param([[1e13, 0.0, 0.0, 0.0]], id="beyond-max-input-abs"),
    ],
)
def test_bad_inputs_are_refused_naming_inputs(
    model: TestClient, endpoint: str, inputs: Any
) -> None:
    response = model.post(f"/v1/models/m/{endpoint}", json=batch_for(endpoint, inputs))
    assert_error(response, 422, "invalid_input", "inputs")


@ENDPOINTS
def test_missing_inputs_are_refused_naming_inputs(model: TestClient, endpoint: str) -> None:
    body = {} if endpoint == "predict" else {"targets": [0]}
    assert_error(model.post(f"/v1/models/m/{endpoint}", json=body), 422, "invalid_input", "inputs")


@ENDPOINTS
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_finite_input_is_refused_naming_inputs(
    model: TestClient, endpoint: str, literal: bytes
) -> None:
    body = b'{"inputs": [[' + literal + b", 1.0, 2.0, 3.0]]"
    body += b"}" if endpoint == "predict" else b', "targets": [0]}'
    response = model.post(f"/v1/models/m/{endpoint}", content=body, headers=JSON)
    assert_error(response, 422, "invalid_input", "inputs")


@ENDPOINTS
def test_more_rows_than_max_batch_rows_are_refused_naming_inputs(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings], endpoint: str
) -> None:
    client = start(make_settings(max_batch_rows=8))
    client.post("/v1/models", json=model_body("m"))
    assert client.post("/v1/models/m/predict", json={"inputs": rows(8)}).status_code == 200
    response = client.post(f"/v1/models/m/{endpoint}", json=batch_for(endpoint, rows(9)))
    assert_error(response, 422, "invalid_input", "inputs")


@ENDPOINTS
def test_unknown_body_key_is_refused_naming_it(model: TestClient, endpoint: str) -> None:
    body = {**batch_for(endpoint, rows(2)), "weights": [1, 1]}
    assert_error(model.post(f"/v1/models/m/{endpoint}", json=body), 422, "invalid_input", "weights")


@ENDPOINTS
def test_body_that_is_not_an_object_is_refused(model: TestClient, endpoint: str) -> None:
    response = model.post(f"/v1/models/m/{endpoint}", json=[[1.0, 2.0, 3.0, 4.0]])
    assert_error(response, 422, "invalid_input", "body")


@pytest.mark.parametrize("version", [0, -1, "1", 1.5, True])
def test_bad_version_number_is_refused_naming_version(model: TestClient, version: object) -> None:
    response = model.post("/v1/models/m/predict", json={"inputs": rows(1), "version": version})
    assert_error(response, 422, "invalid_input", "version")


# -- partial-fit: the targets -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "outputs", "targets"),
    [
        pytest.param("classification", 3, [0.5, 1], id="fractional-class"),
        pytest.param("classification", 3, [0, 3], id="class-too-high"),
        pytest.param("classification", 3, [0, -1], id="class-negative"),
        pytest.param("classification", 3, ["a", "b"], id="strings"),
        pytest.param("classification", 3, [[0], [1]], id="nested-classes"),
        pytest.param("classification", 3, [0], id="too-few"),
        pytest.param("classification", 3, [0, 1, 2], id="too-many"),
        pytest.param("classification", 3, "0,1", id="not-a-list"),
        pytest.param("binary", 1, [0, 2], id="binary-label-two"),
        pytest.param("regression", 2, [1.0, 2.0], id="one-number-for-two-outputs"),
        pytest.param("regression", 2, [[1.0, 2.0], [3.0]], id="ragged-regression"),
        pytest.param("regression", 1, [1e13, 0.0], id="beyond-max-input-abs"),
    ],
)
def test_bad_targets_are_refused_naming_targets(
    client: TestClient, task: str, outputs: int, targets: object
) -> None:
    create_model(client, task, outputs)
    response = client.post("/v1/models/t/partial-fit", json={"inputs": rows(2), "targets": targets})
    assert_error(response, 422, "invalid_input", "targets")


def test_missing_targets_are_refused_naming_targets(model: TestClient) -> None:
    response = model.post("/v1/models/m/partial-fit", json={"inputs": rows(2)})
    assert_error(response, 422, "invalid_input", "targets")


def test_non_finite_regression_target_is_refused_naming_targets(client: TestClient) -> None:
    create_model(client, "regression", 1)
    body = b'{"inputs": [[1, 2, 3, 4]], "targets": [NaN]}'
    response = client.post("/v1/models/t/partial-fit", content=body, headers=JSON)
    assert_error(response, 422, "invalid_input", "targets")


def test_refused_targets_leave_the_model_untrained(model: TestClient) -> None:
    model.post("/v1/models/m/partial-fit", json={"inputs": rows(4), "targets": [0, 1, 2, 9]})
    state = model.get("/v1/models/m").json()
    assert (state["step"], state["samples_seen"]) == (0, 0)


# -- unknown models and versions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/models/ghost", None),
        ("DELETE", "/v1/models/ghost", None),
        ("POST", "/v1/models/ghost/predict", {"inputs": [[1.0, 2.0, 3.0, 4.0]]}),
        (
            "POST",
            "/v1/models/ghost/partial-fit",
            {"inputs": [[1.0, 2.0, 3.0, 4.0]], "targets": [0]},
        ),
        ("GET", "/v1/models/ghost/versions", None),
        ("POST", "/v1/models/ghost/versions", None),
        ("GET", "/v1/models/ghost/versions/1", None),
        ("POST", "/v1/models/ghost/rollback", {"version": 1}),
        ("GET", "/v1/models/ghost/events", None),
    ],
)
def test_unknown_model_is_a_404_naming_it(
    model: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = model.request(method, path, json=body)
    assert_error(response, 404, "model_not_found", "name")


@BOTH
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/models/m/predict", {"inputs": [[1.0, 2.0, 3.0, 4.0]], "version": 2}),
        ("GET", "/v1/models/m/versions/2", None),
        ("POST", "/v1/models/m/rollback", {"version": 2}),
    ],
)
def test_unknown_version_is_a_404_naming_version(
    model: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = model.request(method, path, json=body)
    assert_error(response, 404, "version_not_found", "version")


def test_refused_rollback_leaves_the_served_version(model: TestClient) -> None:
    model.post("/v1/models/m/rollback", json={"version": 7})
    assert model.post("/v1/models/m/predict", json={"inputs": rows(1)}).json()["version"] == 1


def test_deleted_model_is_a_404_afterwards(model: TestClient) -> None:
    assert model.delete("/v1/models/m").status_code == 204
    response = model.post("/v1/models/m/predict", json={"inputs": rows(1)})
    assert_error(response, 404, "model_not_found", "name")


# -- the body itself: JSON, content-type, size ------------------------------------------------

BODY_ROUTES = pytest.mark.parametrize(
    "path",
    [
        "/v1/models",
        "/v1/models/m/predict",
        "/v1/models/m/partial-fit",
        "/v1/models/m/rollback",
    ],
)


@BODY_ROUTES
@pytest.mark.parametrize("body", [b'{"inputs": [[1, 2', b"{'version': 1}", b"not json"])
def test_malformed_json_is_a_400(model: TestClient, path: str, body: bytes) -> None:
    assert_error(model.post(path, content=body, headers=JSON), 400, "malformed_body", None)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models",
        "/v1/models/m/predict",
        "/v1/models/m/partial-fit",
        "/v1/models/m/rollback",
    ],
)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_a_415(model: TestClient, path: str, content_type: str) -> None:
    body = orjson.dumps({"inputs": rows(1), "targets": [0]})
    response = model.post(path, content=body, headers={"content-type": content_type})
    assert_error(response, 415, "unsupported_media_type", None)


def test_json_content_type_with_charset_is_accepted(model: TestClient) -> None:
    body = orjson.dumps({"inputs": rows(1)})
    headers = {"content-type": "application/json; charset=utf-8"}
    assert model.post("/v1/models/m/predict", content=body, headers=headers).status_code == 200


@pytest.fixture
def small_bodies(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> TestClient:
    """The app with max_body_bytes=1024 and `m`."""
    client = start(make_settings(max_body_bytes=1024))
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    return client


def oversized(path: str) -> bytes:
    if path == "/v1/models":
        return orjson.dumps(with_field(model_body("big"), "spec.hidden", [1] * 600))
    return orjson.dumps({"inputs": rows(60), "targets": labels(60)})


def chunks(data: bytes, size: int = 256) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


@BODY_ROUTES
def test_body_declared_over_max_body_bytes_is_a_413(small_bodies: TestClient, path: str) -> None:
    response = small_bodies.post(path, content=oversized(path), headers=JSON)
    assert_error(response, 413, "body_too_large", None)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models",
        "/v1/models/m/predict",
        "/v1/models/m/partial-fit",
    ],
)
def test_streamed_body_over_max_body_bytes_is_a_413(small_bodies: TestClient, path: str) -> None:
    response = small_bodies.post(path, content=chunks(oversized(path)), headers=JSON)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body_too_large", None)


def test_body_under_max_body_bytes_is_served(small_bodies: TestClient) -> None:
    body = orjson.dumps({"inputs": rows(8)})
    assert len(body) < 1024
    assert small_bodies.post("/v1/models/m/predict", content=body, headers=JSON).status_code == 200
