"""Regression from the first batch: features far from zero meet no empty normalizer, targets
are learned standardized (statistics from training rows only, saved with the weights, answers
in target units), and a crash replays them bit for bit."""

from __future__ import annotations

from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from safetensors.numpy import load_file

from service.config import Settings
from tests.factories import checkpoint, crash_image, fit

Start = Callable[..., TestClient]
ROWS, CHUNK = 640, 32


def dated_stream(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Six features, one a date ordinal near 736,000; targets near 41 (std about 1.7)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, 6))
    x[:, 0] = 736_000 + rng.integers(0, 1000, ROWS)
    y = 41.0 + 0.003 * (x[:, 0] - 736_500) + 0.5 * x[:, 1] + rng.normal(scale=0.2, size=ROWS)
    return x, y


def create(client: TestClient, name: str = "m", **spec: Any) -> None:
    body = {
        "name": name, "seed": 0,
        "spec": {"task": "regression", "inputs": 6, "outputs": 1, **spec},
    }  # fmt: skip
    response = client.post("/v1/models", json=body)
    assert response.status_code == 201, response.text


def lines(x: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    starts = range(0, len(y), CHUNK)
    return [
        {"inputs": x[i : i + CHUNK].tolist(), "targets": y[i : i + CHUNK].tolist()} for i in starts
    ]


def prequential_mae(client: TestClient, name: str, batches: list[dict[str, Any]]) -> list[float]:
    return [fit(client, name, line)["prequential"]["mae"] for line in batches]


def test_the_first_batch_is_not_answered_through_an_empty_normalizer(client: TestClient) -> None:
    create(client)
    x, y = dated_stream()
    answer = client.post("/v1/models/m/predict", json={"inputs": x[:CHUNK].tolist()}).json()
    assert np.abs(np.array(answer["predictions"])).max() < 5.0  # not ±hundreds of thousands
    first = fit(client, "m", lines(x, y)[0])["prequential"]["mae"]
    assert first < 45.0  # about the targets' own size: predicted from no features at all


def test_regression_learns_the_targets_offset_within_a_pass(client: TestClient) -> None:
    create(client, "standardized")
    create(client, "raw", normalize_target=False)
    x, y = dated_stream()
    ours = prequential_mae(client, "standardized", lines(x, y))
    raw = prequential_mae(client, "raw", lines(x, y))
    assert np.mean(ours[-5:]) < 0.6, ours
    assert np.mean(raw[-5:]) > 3 * np.mean(ours[-5:]), (raw[-5:], ours[-5:])


def test_target_statistics_come_from_training_rows_and_are_saved_with_the_weights(
    client: TestClient, settings: Settings
) -> None:
    create(client)
    x, y = dated_stream()
    trained = np.zeros(0)
    for line in lines(x, y)[:4]:
        answer = fit(client, "m", line)
        assert answer["trained"] > 0
        trained = np.concatenate([trained, np.asarray(line["targets"])])
    number = checkpoint(client, "m")
    sha = client.get(f"/v1/models/m/versions/{number}").json()["weights_sha256"]
    files = Path(settings.weights_root).glob("m*/*.safetensors")
    saved = load_file(next(str(f) for f in files if sha256(f.read_bytes()).hexdigest() == sha))
    count = float(saved["network/target_normalizer.count"])
    assert count < len(trained)  # held-out rows never reach the statistics
    assert abs(float(saved["network/target_normalizer.mean"][0]) - trained.mean()) < 0.5


def test_a_crash_replays_target_standardization_bit_for_bit(
    start: Start, settings: Settings, tmp_path: Path
) -> None:
    original = start()
    create(original)
    x, y = dated_stream()
    batches = lines(x, y)
    for line in batches[:6]:
        fit(original, "m", line)
    copy = start(crash_image(settings, tmp_path / "copy"))
    probe = {"inputs": x[:8].tolist()}
    for line in batches[6:10]:
        assert fit(copy, "m", line) == fit(original, "m", line)
    assert (
        copy.post("/v1/models/m/predict", json=probe).json()
        == original.post("/v1/models/m/predict", json=probe).json()
    )
