"""Builders for request bodies and data, so tests read as behaviour, not dict soup."""

from __future__ import annotations

import json
import shutil
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from service.config import Settings

# The behaviour most tests were written against: one plain step per mini-batch of 16, every
# row trains, a round every 20 steps, a stop after 10 rounds without improvement (the service's
# defaults are tuned for learning quality instead; tests/learning/test_replay.py covers them).
PINNED_TRAINING: dict[str, Any] = {
    "batch_size": 16, "holdout": 0.0, "eval_every": 20, "patience": 10, "replay": 0,
    "steps_per_batch": 1,
}  # fmt: skip


def model_body(
    name: str = "m",
    *,
    task: str = "classification",
    inputs: int = 4,
    outputs: int = 3,
    hidden: list[int] | None = None,
    optimizer: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    seed: int = 0,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "spec": {
            "task": task,
            "inputs": inputs,
            "outputs": outputs,
            "hidden": [16] if hidden is None else hidden,
            **spec,
        },
        "optimizer": optimizer or {"name": "adam", "lr": 0.01},
        "training": {**PINNED_TRAINING, **(training or {})},
        "seed": seed,
    }


def rows(n: int, features: int = 4, *, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(n, features)).round(4).tolist()


def labelled(n: int, *, seed: int) -> dict[str, Any]:
    """A partial-fit body of `n` seeded rows and labels (4 features, 3 classes)."""
    return {"inputs": rows(n, seed=seed), "targets": labels(n, seed=seed)}


def labels(n: int, classes: int = 3, *, seed: int = 0) -> list[int]:
    return np.random.default_rng(seed).integers(0, classes, size=n).tolist()


def digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (8×8 images, 10 classes): train/test, stratified."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.3, random_state=seed, stratify=y
    )
    return x_train, x_test, y_train, y_test


def batches(x: np.ndarray, y: np.ndarray, size: int) -> list[dict[str, Any]]:
    return [
        {"inputs": x[i : i + size].tolist(), "targets": y[i : i + size].tolist()}
        for i in range(0, len(x), size)
    ]


def with_field(body: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of `body` with the field at `dotted` (e.g. `spec.dropout`) set to `value`."""
    changed = deepcopy(body)
    *parents, key = dotted.split(".")
    target = changed
    for part in parents:
        target = target[part]
    target[key] = value
    return changed


def outputs(body: dict[str, Any]) -> list[Any]:
    """What a predict response says: probabilities when it has them, else the predictions."""
    result: list[Any] = body["probabilities"] or body["predictions"]
    return result


def predicted(
    client: TestClient, name: str, inputs: list[list[float]], version: int | None = None
) -> list[Any]:
    """The outputs of `version` (default: the served one) for `inputs`, compared bit for bit."""
    request: dict[str, Any] = {"inputs": inputs}
    if version is not None:
        request["version"] = version
    response = client.post(f"/v1/models/{name}/predict", json=request)
    assert response.status_code == 200, response.text
    return outputs(response.json())


def checkpoint(client: TestClient, name: str) -> int:
    response = client.post(f"/v1/models/{name}/versions")
    assert response.status_code == 201, response.text
    number: int = response.json()["version"]
    return number


def head_outputs(client: TestClient, name: str, inputs: list[list[float]]) -> list[Any]:
    """What the training head predicts: checkpoints it, then predicts with that version."""
    return predicted(client, name, inputs, checkpoint(client, name))


def fit(client: TestClient, name: str, batch: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/v1/models/{name}/partial-fit", json=batch)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rollback(client: TestClient, name: str, version: int) -> None:
    response = client.post(f"/v1/models/{name}/rollback", json={"version": version})
    assert response.status_code == 200, response.text


def blobs(
    n: int, *, features: int = 4, classes: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian rows labelled by one fixed linear rule (argmax of x·W): cheap and learnable."""
    weights = np.random.default_rng(1234).normal(size=(features, classes))
    x = np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)
    return x, (x @ weights).argmax(axis=1)


def noisy(labels: np.ndarray, fraction: float, classes: int, *, seed: int = 0) -> np.ndarray:
    """`labels` with a seeded `fraction` of them redrawn uniformly at random."""
    rng = np.random.default_rng(seed)
    redraw = rng.random(labels.shape[0]) < fraction
    changed = labels.copy()
    changed[redraw] = rng.integers(0, classes, size=int(redraw.sum()))
    return changed


def batch(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"inputs": x.tolist(), "targets": y.tolist()}


def log_loss(probabilities: list[list[float]], labels: np.ndarray) -> float:
    """Mean negative log-likelihood of `labels` under predicted `probabilities`."""
    p = np.asarray(probabilities, dtype=np.float64)[np.arange(labels.shape[0]), labels]
    return float(-np.log(np.clip(p, 1e-12, None)).mean())


def accuracy(predictions: list[Any], labels: np.ndarray) -> float:
    return float((np.asarray(predictions) == labels).mean())


def events(client: TestClient, name: str, kind: str | None = None) -> list[dict[str, Any]]:
    """The model's events, oldest first; only those of `kind` when given."""
    response = client.get(f"/v1/models/{name}/events")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["events"]
    return [e for e in found if kind is None or e["kind"] == kind]


def model_state(client: TestClient, name: str) -> dict[str, Any]:
    response = client.get(f"/v1/models/{name}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def noisy_blobs(n: int, *, seed: int, noise: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """`blobs` (three classes) with a seeded `noise` fraction of their labels redrawn."""
    x, y = blobs(n, seed=seed)
    return x, noisy(y, noise, 3, seed=seed)


def overfitting_body(name: str, **training: Any) -> dict[str, Any]:
    """A [64, 64] network that overfits 60 rows of `noisy_blobs(60, seed=1)` streamed whole:
    three steps of 20 and exactly one round per call. Against 200 rows of
    `noisy_blobs(200, seed=2)` its validation loss falls for about five rounds (to ~0.85),
    then rises for good. Rollback is off unless asked for, so nothing cuts the rise short."""
    defaults = {"batch_size": 20, "eval_every": 3, "patience": 50, "rollback_tolerance": None}
    return model_body(
        name, hidden=[64, 64], optimizer={"name": "adam", "lr": 0.005},
        training=defaults | training,
    )  # fmt: skip


def numbered_batches(
    count: int, *, rows: int = 8, features: int = 4, seed: int = 0, prefix: str = "b"
) -> list[dict[str, Any]]:
    """`count` batches of `rows` learnable rows (`blobs`), batch ids `{prefix}0`, `{prefix}1`…"""
    x, y = blobs(count * rows, features=features, seed=seed)
    return [
        batch(x[i * rows : (i + 1) * rows], y[i * rows : (i + 1) * rows])
        | {"batch_id": f"{prefix}{i}"}
        for i in range(count)
    ]


def ndjson(lines: list[dict[str, Any] | str]) -> bytes:
    """An NDJSON body: objects as JSON, strings as they are (for lines meant to be malformed)."""
    return b"".join(
        (line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines
    )


def stream_fit(
    client: TestClient, name: str, lines: list[dict[str, Any] | str], *, on_error: str = "skip"
) -> list[dict[str, Any]]:
    """Streams `lines` to partial-fit as NDJSON; the answer's lines, parsed, summary last."""
    response = client.post(
        f"/v1/models/{name}/partial-fit", params={"on_error": on_error}, content=ndjson(lines),
        headers={"content-type": "application/x-ndjson"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    return [json.loads(line) for line in response.text.splitlines()]


def crash_image(settings: Settings, target: Path) -> Settings:
    """A copy of `settings`' data directory, taken as a crash would leave it (no shutdown ran:
    call it while the app is idle), and the settings of an app that starts on the copy."""
    shutil.copytree(settings.data_dir, target)
    return settings.model_copy(
        update={"data_dir": target, "database_url": f"sqlite:///{target / 'gradual.db'}"}
    )
