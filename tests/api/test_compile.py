"""GRADUAL_COMPILE: compiled forward passes predict as eager ones do, a restart replays the log
to the same weights, and a compile that fails runs eagerly instead of failing the request.

Compiling is slow on two cores: one tiny model, one stream, and each mode's whole story in
one test (the compiled code is shared by every app in the process after the first compile).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from models.network import build_network
from models.spec import NetworkSpec
from service.app import create_app
from service.config import Settings
from service.learning.compilation import CompiledForward
from tests.factories import checkpoint, crash_image, fit, model_body, numbered_batches, rows

# Warnings are errors here, and an error while compiling means eager: torch's own warnings
# while it traces a training step must stay warnings for anything compiled to be tested.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning"
)

# Dropout draws from the network's own generator: the compiled step breaks its graph there,
# the case where a replay is most likely to drift.
TINY = model_body(
    "m", hidden=[8], dropout=0.2,
    training={"holdout": 0.2, "eval_every": 3, "replay": 24, "promote": "latest"},
)  # fmt: skip
STREAM = numbered_batches(9, rows=12, seed=5)
PROBE = rows(5, seed=11)  # more than one row: a single row would compile a graph of its own


def _settings(root: Path, compile_mode: str) -> Settings:
    return Settings(
        data_dir=root, database_url=f"sqlite:///{root / 'gradual.db'}", device="cpu",
        torch_threads=1, compile=compile_mode,  # type: ignore[arg-type]
    )  # fmt: skip


def _probabilities(client: TestClient) -> torch.Tensor:
    response = client.post("/v1/models/m/predict", json={"inputs": PROBE})
    assert response.status_code == 200, response.text
    return torch.tensor(response.json()["probabilities"], dtype=torch.float64)


def _weights_sha256(client: TestClient) -> str:
    number = checkpoint(client, "m")
    sha: str = client.get(f"/v1/models/m/versions/{number}").json()["weights_sha256"]
    return sha


def _train(client: TestClient, batches: list[dict[str, Any]]) -> None:
    if client.get("/v1/models/m").status_code == 404:
        assert client.post("/v1/models", json=TINY).status_code == 201
    for batch in batches:
        fit(client, "m", batch)


@pytest.fixture(scope="module")
def eager_outputs(tmp_path_factory: pytest.TempPathFactory) -> torch.Tensor:
    with TestClient(create_app(_settings(tmp_path_factory.mktemp("eager"), "off"))) as eager:
        _train(eager, STREAM)
        return _probabilities(eager)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["predict", "all"])
def test_compiled_server_predicts_as_eager_and_replays_its_log_bit_for_bit(
    mode: str, eager_outputs: torch.Tensor, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gradual.compile")
    settings = _settings(tmp_path / "data", mode)
    with TestClient(create_app(settings)) as compiled:
        assert compiled.get("/readyz").json()["detail"]["compile"] == mode
        _train(compiled, STREAM[:-1])
        image = crash_image(settings, tmp_path / "image")  # the log holds the batches since
        _train(compiled, STREAM[-1:])
        outputs = _probabilities(compiled)
        after_last = _weights_sha256(compiled)
    torch.testing.assert_close(outputs, eager_outputs, rtol=0, atol=1e-5)
    torch._dynamo.reset()  # as a new process would, the restart compiles afresh
    with TestClient(create_app(image)) as restarted:  # and replays the log compiled
        _train(restarted, STREAM[-1:])
        assert _weights_sha256(restarted) == after_last
    fallbacks = [r.getMessage() for r in caplog.records if r.name == "gradual.compile"]
    assert not fallbacks, "compiling fell back to eager: nothing compiled was tested"


def _failing_backend(*_: object) -> None:
    raise RuntimeError("no compiler today")


@pytest.mark.parametrize("backend", [_failing_backend, "no-such-backend"])
def test_a_compile_that_fails_runs_eagerly_with_one_warning(
    backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gradual.compile")
    spec = NetworkSpec(task="regression", inputs=4, outputs=1, hidden=[8], dropout=0.5)
    network, twin = build_network(spec, seed=3), build_network(spec, seed=3)
    forward = CompiledForward(network.train(), backend=backend)
    x = torch.randn(6, 4)
    for _ in range(2):  # same dropout masks as eager: a failed pass drew none for good
        assert torch.equal(forward(x), twin.train()(x))
    assert not forward.active
    warned = [r.getMessage() for r in caplog.records if r.name == "gradual.compile"]
    assert len(warned) == 1
    assert "running this network eagerly" in warned[0]
