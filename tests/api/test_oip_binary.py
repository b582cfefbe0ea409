"""The binary tensor data extension on /v2 infer: a JSON header of `Inference-Header-Content-
Length` bytes, then the tensors' raw little-endian bytes, in requests and in responses.

Every answer is compared bit for bit with native predict's; every malformed body is a 400
naming what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.api.test_oip import assert_protocol_error, native, tensor
from tests.factories import model_body, rows

HEADER = "Inference-Header-Content-Length"


@pytest.fixture
def model(client: TestClient) -> TestClient:
    """The app with `m`: a 3-class classifier over 4 features."""
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    return client


def binary_body(
    array: np.ndarray, datatype: str = "FP32", **fields: Any
) -> tuple[bytes, dict[str, str]]:
    """An infer request whose one input travels as raw bytes after the JSON header."""
    raw = array.tobytes()
    header = {
        "inputs": [
            {"name": "inputs", "shape": list(array.shape), "datatype": datatype,
             "parameters": {"binary_data_size": len(raw)}},
        ],
        **fields,
    }  # fmt: skip
    head = json.dumps(header).encode()
    return head + raw, {HEADER: str(len(head))}


def post(client: TestClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/v2/models/m/infer", content=body, headers=headers)


def outputs_of(response: Any) -> dict[str, np.ndarray]:
    """A response's outputs as arrays, binary or JSON, read as a client would."""
    assert response.status_code == 200, response.text
    length = int(response.headers.get(HEADER, len(response.content)))
    header = json.loads(response.content[:length])
    tail = response.content[length:]
    found: dict[str, np.ndarray] = {}
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    for output in header["outputs"]:
        dtype = dtypes[output["datatype"]]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            values = np.asarray(output["data"], dtype=dtype)
        else:
            values, tail = np.frombuffer(tail[:size], dtype=dtype), tail[size:]
        found[output["name"]] = values.reshape(output["shape"])
    assert tail == b""
    return found


def assert_native(client: TestClient, x: np.ndarray, found: dict[str, np.ndarray]) -> None:
    """Bit for bit what native predict answers for the same rows."""
    expected = native(client, "m", x.astype(np.float64).tolist())
    labels = np.asarray(expected["predictions"], dtype=np.int64)
    probabilities = np.asarray(expected["probabilities"], dtype=np.float32)
    assert found["predictions"].dtype == np.int64
    assert np.array_equal(found["predictions"], labels)
    assert found["probabilities"].dtype == np.float32
    assert found["probabilities"].tobytes() == probabilities.tobytes()


def test_binary_input_answers_what_native_predict_answers(model: TestClient) -> None:
    x = np.asarray(rows(6), dtype=np.float32)
    response = post(model, *binary_body(x))
    assert response.headers["content-type"].startswith("application/json")
    assert_native(model, x, outputs_of(response))


def test_binary_body_may_say_it_is_octets(model: TestClient) -> None:
    x = np.asarray(rows(2), dtype=np.float32)
    body, headers = binary_body(x)
    response = post(model, body, headers | {"content-type": "application/octet-stream"})
    assert_native(model, x, outputs_of(response))
    native_route = model.post(
        "/v1/models/m/predict", content=b"{}", headers={"content-type": "application/octet-stream"}
    )
    assert native_route.status_code == 415


def test_binary_data_output_sends_every_output_as_raw_bytes(model: TestClient) -> None:
    x = np.asarray(rows(5), dtype=np.float32)
    response = post(model, *binary_body(x, parameters={"binary_data_output": True}))
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers[HEADER])
    header = json.loads(response.content[:length])
    sizes = [output["parameters"]["binary_data_size"] for output in header["outputs"]]
    assert sizes == [5 * 8, 5 * 3 * 4]
    assert all("data" not in output for output in header["outputs"])
    assert len(response.content) == length + sum(sizes)
    assert_native(model, x, outputs_of(response))


def test_each_output_may_choose_binary_or_json(model: TestClient) -> None:
    x = np.asarray(rows(3), dtype=np.float32)
    outputs = [
        {"name": "probabilities", "parameters": {"binary_data": True}},
        {"name": "predictions", "parameters": {"binary_data": False}},
    ]
    response = post(model, *binary_body(x, outputs=outputs))
    header = json.loads(response.content[: int(response.headers[HEADER])])
    kinds = [(o["name"], "data" in o, "parameters" in o) for o in header["outputs"]]
    assert kinds == [("probabilities", False, True), ("predictions", True, False)]
    assert_native(model, x, outputs_of(response))


def test_json_input_may_ask_for_binary_outputs(model: TestClient) -> None:
    x = np.asarray(rows(4), dtype=np.float32)
    body = {"inputs": [tensor(x.reshape(-1).tolist(), [4, 4])]}
    body["parameters"] = {"binary_data_output": True}
    response = model.post("/v2/models/m/infer", json=body)
    assert int(response.headers[HEADER]) < len(response.content)
    assert_native(model, x, outputs_of(response))


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float16, np.int64, np.int32, np.int8, np.uint8, np.uint64]
)
def test_binary_input_of_any_numeric_datatype_is_read_as_fp32(
    model: TestClient, dtype: Callable[..., Any]
) -> None:
    x = np.asarray([[1, 0, 2, 3], [4, 5, 0, 1]], dtype=dtype)
    datatype = {"f": "FP", "i": "INT", "u": "UINT"}[x.dtype.kind] + str(x.dtype.itemsize * 8)
    assert_native(model, x.astype(np.float32), outputs_of(post(model, *binary_body(x, datatype))))


# -- refusals ---------------------------------------------------------------------------------


def with_header(
    raw: bytes, headers: dict[str, str], **changes: Any
) -> tuple[bytes, dict[str, str]]:
    """The body with its JSON header rewritten by `changes` to the one input."""
    length = int(headers[HEADER])
    header = json.loads(raw[:length])
    header["inputs"][0] |= changes
    head = json.dumps(header).encode()
    return head + raw[length:], {HEADER: str(len(head))}


def test_header_length_beyond_the_body_is_400(model: TestClient) -> None:
    body, _ = binary_body(np.zeros((1, 4), dtype=np.float32))
    response = post(model, body, {HEADER: str(len(body) + 1)})
    assert_protocol_error(response, 400, f"{HEADER} is {len(body) + 1}, beyond the body's")


@pytest.mark.parametrize("value", ["ten", "-1", "1.5"])
def test_header_length_that_is_not_a_byte_count_is_400(model: TestClient, value: str) -> None:
    body, _ = binary_body(np.zeros((1, 4), dtype=np.float32))
    assert_protocol_error(post(model, body, {HEADER: value}), 400, HEADER)


def test_binary_data_that_does_not_add_up_is_400(model: TestClient) -> None:
    body, headers = binary_body(np.zeros((2, 4), dtype=np.float32))
    response = post(model, body + b"\x00" * 4, headers)
    assert_protocol_error(response, 400, "is 36 bytes; the inputs' parameters.binary_data_size")


def test_bytes_of_another_datatype_are_400(model: TestClient) -> None:
    """FP64 bytes declared FP32: twice the bytes the shape needs."""
    body, headers = binary_body(np.zeros((2, 4), dtype=np.float64), "FP32")
    response = post(model, body, headers)
    message = "inputs.0.parameters.binary_data_size is 64 bytes, but shape [2, 4] of FP32 needs 32"
    assert_protocol_error(response, 400, message)


@pytest.mark.parametrize(
    ("changes", "mentions"),
    [
        ({"data": [0.0] * 8}, "not both"),
        ({"parameters": {"binary_data_size": "32"}}, "inputs.0.parameters.binary_data_size"),
        ({"parameters": {"binary_data_size": -32}}, "inputs.0.parameters.binary_data_size"),
        ({"parameters": {}}, "inputs.0: send data, or parameters.binary_data_size"),
        ({"datatype": "BYTES"}, "datatype 'BYTES'"),
        ({"shape": [4, 2]}, "shape must be [N, 4]"),
    ],
)
def test_malformed_binary_input_is_400(
    model: TestClient, changes: dict[str, Any], mentions: str
) -> None:
    request = with_header(*binary_body(np.zeros((2, 4), dtype=np.float32)), **changes)
    if "parameters" in changes:  # the input no longer declares its 32 bytes: drop them
        request = (request[0][:-32], request[1])
    assert_protocol_error(post(model, *request), 400, mentions)


def test_binary_data_size_without_the_header_is_400(model: TestClient) -> None:
    body, headers = binary_body(np.zeros((1, 4), dtype=np.float32))
    json_only = body[: int(headers[HEADER])]
    assert_protocol_error(post(model, json_only, {}), 400, f"no {HEADER} header")


def test_non_finite_binary_input_is_400(model: TestClient) -> None:
    x = np.asarray([[1, 2, np.nan, 4]], dtype=np.float32)
    assert_protocol_error(post(model, *binary_body(x)), 400, "non-finite")


def test_binary_output_flag_that_is_not_a_boolean_is_400(model: TestClient) -> None:
    body = binary_body(np.zeros((1, 4), dtype=np.float32), parameters={"binary_data_output": 1})
    assert_protocol_error(post(model, *body), 400, "parameters.binary_data_output")


def test_binary_body_over_the_size_limit_is_413(
    start: Callable[..., TestClient], make_settings: Callable[..., Any]
) -> None:
    client = start(make_settings(max_body_bytes=4096))
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    body, headers = binary_body(np.zeros((300, 4), dtype=np.float32))
    response = post(client, body, headers)
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")
