"""What only a GPU shows: placement on the device, pinned copies, versions and buffers resident
there, bf16 autocast steps, and a restart bit for bit.

Run by `scripts/gpu-check`; skipped where CUDA is missing. `GRADUAL_TEST_DEVICE=cpu` runs the
same tests on the CPU (how they are checked on a machine without a GPU).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.config import Settings
from service.learning.served import to_device
from service.runtime.hub import ModelHub
from tests.factories import checkpoint, fit, labelled, model_body, predicted, rows

DEVICE = torch.device(os.environ.get("GRADUAL_TEST_DEVICE", "cuda"))

pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device"
)
Start = Callable[..., TestClient]


@pytest.fixture
def on_device(make_settings: Callable[..., Settings], start: Start) -> Start:
    def run(**overrides: object) -> TestClient:
        return start(make_settings(device=str(DEVICE), **overrides))

    return run


def hub_of(client: TestClient) -> ModelHub:
    hub: ModelHub = client.app.state.hub  # type: ignore[attr-defined]
    return hub


def test_a_model_trains_and_predicts_on_the_device(on_device: Start) -> None:
    client = on_device()
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    assert client.get("/v1/models/m").json()["device"].startswith(DEVICE.type)
    assert fit(client, "m", labelled(64, seed=1))["samples_seen"] == 64
    assert len(predicted(client, "m", rows(5))) == 5


def test_pinned_copies_reach_the_device_unchanged() -> None:
    array = np.random.default_rng(0).normal(size=(33, 7)).astype(np.float32)
    tensor = to_device(array, DEVICE)
    assert tensor.device.type == DEVICE.type
    assert np.array_equal(tensor.cpu().numpy(), array)


def test_served_versions_and_the_validation_buffer_live_on_the_device(on_device: Start) -> None:
    client = on_device()
    body = model_body("m", training={"holdout": 0.25, "eval_every": 1})
    assert client.post("/v1/models", json=body).status_code == 201
    fit(client, "m", labelled(64, seed=1))
    learner = hub_of(client).live("m").learner
    served = {p.device.type for p in learner.versions.served.network.parameters()}
    assert served == {DEVICE.type}
    assert {t.device.type for t in learner.buffer.tensors()} == {DEVICE.type}


def test_bf16_autocast_steps_train_to_finite_weights(on_device: Start) -> None:
    client = on_device(precision="bf16")
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    for seed in range(3):
        fit(client, "m", labelled(64, seed=seed))
    head = hub_of(client).live("m").learner.head
    assert all(torch.isfinite(p).all() for p in head.network.parameters())
    assert all(p.dtype == torch.float32 for p in head.network.parameters())


def test_a_restart_on_the_device_predicts_bit_for_bit(on_device: Start) -> None:
    client = on_device()
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    fit(client, "m", labelled(64, seed=1))
    checkpoint(client, "m")
    probe = rows(9, seed=7)
    before = client.post("/v1/models/m/predict", json={"inputs": probe}).json()
    client.__exit__(None, None, None)
    again = on_device()
    after = again.post("/v1/models/m/predict", json={"inputs": probe}).json()
    assert after == before
