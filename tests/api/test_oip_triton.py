"""Triton's own HTTP client against a real server: `tritonclient.http` in its default mode
(binary tensors both ways) and in JSON mode, each answer compared bit for bit with native
predict's for the same rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from service.config import Settings
from tests.factories import model_body, rows
from tests.live_server import serving


@pytest.fixture
def server(make_settings: Callable[..., Settings]) -> Iterator[str]:
    """A live server with a 3-class model `m`; yields its URL."""
    with serving(make_settings(torch_threads=1)) as url:
        created = httpx.post(f"{url}/v1/models", json=model_body("m"), timeout=30)
        assert created.status_code == 201, created.text
        yield url


def native(url: str, x: np.ndarray, headers: dict[str, str] | None = None) -> Any:
    body = {"inputs": x.astype(np.float64).tolist()}
    response = httpx.post(f"{url}/v1/models/m/predict", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def assert_bitwise_native(url: str, x: np.ndarray, result: Any) -> None:
    expected = native(url, x)
    labels, probabilities = result.as_numpy("predictions"), result.as_numpy("probabilities")
    assert labels.dtype == np.int64
    assert np.array_equal(labels, np.asarray(expected["predictions"], dtype=np.int64))
    assert probabilities.dtype == np.float32
    expected_bits = np.asarray(expected["probabilities"], dtype=np.float32).tobytes()
    assert probabilities.tobytes() == expected_bits


def rows32(n: int, *, seed: int = 0) -> np.ndarray:
    return np.asarray(rows(n, seed=seed), dtype=np.float32)


# -- HTTP -------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_http_answers_native_predict_bit_for_bit(server: str, binary: bool) -> None:
    url = server
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    assert client.is_server_ready()
    assert client.is_model_ready("m")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    x = rows32(7)
    tensor = triton_http.InferInput("inputs", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        triton_http.InferRequestedOutput(name, binary_data=binary)
        for name in ("predictions", "probabilities")
    ]
    result = client.infer("m", [tensor], outputs=outputs, request_id="7")
    assert (result.get_response()["id"], result.get_response()["model_version"]) == ("7", "1")
    assert_bitwise_native(url, x, result)
    client.close()


def test_tritonclient_http_default_mode_sends_and_reads_binary(server: str) -> None:
    """`set_data_from_numpy` and `infer` with no options: the extension, both ways."""
    url = server
    client = triton_http.InferenceServerClient(url.removeprefix("http://"))
    x = rows32(5, seed=1)
    tensor = triton_http.InferInput("inputs", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("m", [tensor])
    outputs = {output["name"]: output for output in result.get_response()["outputs"]}
    assert outputs["probabilities"]["parameters"] == {"binary_data_size": 5 * 3 * 4}
    assert_bitwise_native(url, x, result)
    client.close()
