"""Binary tensor bodies (.npy and safetensors) and mixed precision, through HTTP."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save

from service.config import Settings
from tests.factories import model_body

NPY = {"content-type": "application/x-npy"}
SAFETENSORS = {"content-type": "application/x-safetensors"}


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def structured(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    table = np.zeros(len(x), dtype=[("inputs", "<f4", (x.shape[1],)), ("targets", "<i8")])
    table["inputs"], table["targets"] = x, y
    return table


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, size=32)


def test_npy_and_safetensors_train_exactly_like_json(
    start: Callable[..., TestClient], data: tuple[np.ndarray, np.ndarray]
) -> None:
    client = start()
    x, y = data
    for name in ["json", "npy", "st"]:
        client.post("/v1/models", json=model_body(name, seed=1))
    client.post("/v1/models/json/partial-fit", json={"inputs": x.tolist(), "targets": y.tolist()})
    client.post("/v1/models/npy/partial-fit", content=npy(structured(x, y)), headers=NPY)
    client.post(
        "/v1/models/st/partial-fit", content=save({"inputs": x, "targets": y}), headers=SAFETENSORS
    )
    probe = {"inputs": x[:5].tolist()}
    answers = [
        client.post(f"/v1/models/{n}/predict", json=probe).json()["probabilities"]
        for n in ["json", "npy", "st"]
    ]
    assert answers[0] == answers[1] == answers[2]


def test_npy_predict_matches_json_predict(
    client: TestClient, data: tuple[np.ndarray, np.ndarray]
) -> None:
    client.post("/v1/models", json=model_body())
    x, _ = data
    binary = client.post("/v1/models/m/predict", content=npy(x), headers=NPY).json()
    plain = client.post("/v1/models/m/predict", json={"inputs": x.tolist()}).json()
    assert binary["probabilities"] == plain["probabilities"]


def test_binary_batch_id_comes_from_the_query(
    client: TestClient, data: tuple[np.ndarray, np.ndarray]
) -> None:
    client.post("/v1/models", json=model_body())
    body = npy(structured(*data))
    first = client.post("/v1/models/m/partial-fit?batch_id=k1", content=body, headers=NPY).json()
    again = client.post("/v1/models/m/partial-fit?batch_id=k1", content=body, headers=NPY).json()
    assert (first["duplicate"], first["trained"]) == (False, 32)
    assert (again["duplicate"], again["step"]) == (True, first["step"])


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"\x93NUMPY garbage", NPY, 400, "malformed_body"),
        (b"not safetensors", SAFETENSORS, 400, "malformed_body"),
        (npy(np.zeros((3, 5), dtype=np.float32)), NPY, 422, "invalid_input"),
        (npy(np.array([[np.nan, 0, 0, 0]], dtype=np.float32)), NPY, 422, "invalid_input"),
        (save({"inputs": np.zeros((2, 4), np.float32), "extra": np.zeros(2)}), SAFETENSORS, 422,
         "invalid_input"),
    ],
    ids=["bad-npy", "bad-safetensors", "wrong-width", "nan", "unknown-array"],
)  # fmt: skip
def test_bad_binary_bodies_are_refused(
    client: TestClient, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    client.post("/v1/models", json=model_body())
    response = client.post("/v1/models/m/predict", content=body, headers=headers)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_object_arrays_are_never_unpickled(client: TestClient) -> None:
    client.post("/v1/models", json=model_body())
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    response = client.post("/v1/models/m/predict", content=buffer.getvalue(), headers=NPY)
    assert response.status_code == 400
    assert "allow_pickle" in response.json()["message"]


def test_bf16_training_learns(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = start(make_settings(precision="bf16"))
    client.post("/v1/models", json=model_body(hidden=[32]))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 4))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0).astype(int)
    losses = [
        client.post(
            "/v1/models/m/partial-fit", json={"inputs": x.tolist(), "targets": y.tolist()}
        ).json()["train_loss"]
        for _ in range(15)
    ]
    assert losses[-1] < 0.5 * losses[0]
