"""Poisoned batches: 1,000 adversarial batches among 1,000 good ones leave no trace.

Every bad batch is refused with its reason (status, code, field), no parameter or buffer is
ever non-finite, the service answers throughout, and the final head (weights, optimizer
state, normalizer statistics, generator and counters: the checkpoint's sha256) is bit for bit
the head of a control run that saw only the good batches.

The batches go through a *sender*: one function per transport, so the same scenario runs over
HTTP and through a Redis stream as a producer would `XADD` them (refusals are dead-lettered with
their reason).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import torch
from fastapi.testclient import TestClient

from service.api.errors import STATUS
from service.app import create_app
from service.config import Settings
from service.errors import GradualError
from tests.factories import checkpoint, model_body

FEATURES, CLASSES, ROWS = 4, 3, 8
BATCHES = 1000


@dataclass(frozen=True)
class Poison:
    """A bad batch and the refusal it must get: (status, code, field)."""

    kind: str
    body: bytes
    refusal: tuple[int, str, str | None]


@dataclass(frozen=True)
class Outcome:
    status: int
    code: str | None
    field: str | None


Sender = Callable[[TestClient, bytes], Outcome]


def send_http(client: TestClient, body: bytes) -> Outcome:
    response = client.post(
        "/v1/models/m/partial-fit", content=body, headers={"content-type": "application/json"}
    )
    answer = response.json()
    return Outcome(response.status_code, answer.get("code"), answer.get("field"))


def send_redis(client: TestClient, body: bytes) -> Outcome:
    """As a producer: the body goes into the model's stream as is; the owner's outcome (or the
    dead letter's reason) says what became of it."""
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    connection, subscription = _redis(settings)
    entry_id = connection.xadd(f"{settings.redis_prefix}:m:batches", {"body": body}).decode()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        note = subscription.get_message(timeout=1.0)
        if note is None or note["type"] != "message":
            continue
        outcome = json.loads(note["data"])
        if outcome["entry"] != entry_id:
            continue
        if (error := outcome.get("error")) is None:
            return Outcome(200, None, None)
        dead = connection.xrevrange(f"{settings.redis_prefix}:m:dead", count=1)
        assert dead, "not dead-lettered"
        assert dead[0][1][b"source_id"].decode() == entry_id, "not dead-lettered"
        return Outcome(_status(error["code"]), error["code"], error["field"])
    raise AssertionError(f"no outcome for stream entry {entry_id}")


_CONNECTIONS: dict[str, tuple[redis.Redis, Any]] = {}


def _redis(settings: Settings) -> tuple[redis.Redis, Any]:
    if settings.redis_prefix not in _CONNECTIONS:
        assert settings.redis_url is not None
        connection = redis.Redis.from_url(settings.redis_url)
        subscription = connection.pubsub()
        subscription.subscribe(f"{settings.redis_prefix}:outcomes")
        _CONNECTIONS[settings.redis_prefix] = (connection, subscription)
    return _CONNECTIONS[settings.redis_prefix]


def _status(code: str) -> int:
    """The HTTP status the same refusal gets over HTTP (the error table, by class)."""
    classes, found = [GradualError], []
    while classes:
        cls = classes.pop()
        found.append(cls)
        classes.extend(cls.__subclasses__())
    error = next(cls for cls in found if cls.code == code)
    return next(STATUS[base] for base in error.__mro__ if base in STATUS)


SENDERS: dict[str, Sender] = {"http": send_http, "redis": send_redis}


def good_batch(rng: np.random.Generator) -> bytes:
    x = rng.normal(size=(ROWS, FEATURES)).round(4)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int)  # learnable, classes 0..2
    return json.dumps({"inputs": x.tolist(), "targets": y.tolist()}).encode()


def _rows(rng: np.random.Generator, n: int = ROWS) -> list[list[float]]:
    return rng.normal(size=(n, FEATURES)).round(4).tolist()


def _labels(rng: np.random.Generator, n: int = ROWS) -> list[int]:
    return rng.integers(0, CLASSES, size=n).tolist()


def _with_value(rng: np.random.Generator, value: float) -> dict[str, Any]:
    x = _rows(rng)
    x[int(rng.integers(ROWS))][int(rng.integers(FEATURES))] = value
    return {"inputs": x, "targets": _labels(rng)}


INPUTS, TARGETS = (422, "invalid_input", "inputs"), (422, "invalid_input", "targets")
POISONS: dict[str, tuple[Callable[[np.random.Generator], Any], tuple[int, str, str | None]]] = {
    "nan": (lambda r: _with_value(r, float("nan")), INPUTS),
    "+inf": (lambda r: _with_value(r, float("inf")), INPUTS),
    "-inf": (lambda r: _with_value(r, float("-inf")), INPUTS),
    "1e30": (lambda r: _with_value(r, 1e30), INPUTS),
    "1e19": (lambda r: _with_value(r, -1e19), INPUTS),
    "overflow": (lambda r: _with_value(r, 1e39), INPUTS),  # finite in JSON, inf in float32
    # within GRADUAL_MAX_INPUT_ABS, so it reaches the step: its gradient is refused there
    "absurd": (
        lambda r: {
            "inputs": r.uniform(-5e11, 5e11, (ROWS, FEATURES)).tolist(),
            "targets": _labels(r),
        },
        (422, "batch_rejected", "inputs"),
    ),
    "target 1e19": (lambda r: {"inputs": _rows(r), "targets": [1e19] * ROWS}, TARGETS),
    "label out of range": (lambda r: {"inputs": _rows(r), "targets": [CLASSES] * ROWS}, TARGETS),
    "negative label": (lambda r: {"inputs": _rows(r), "targets": [-1] * ROWS}, TARGETS),
    "fractional label": (lambda r: {"inputs": _rows(r), "targets": [0.5] * ROWS}, TARGETS),
    "wrong width": (
        lambda r: {"inputs": r.normal(size=(ROWS, 5)).tolist(), "targets": _labels(r)},
        INPUTS,
    ),
    "ragged": (lambda r: {"inputs": [[1.0] * 4, [1.0] * 3], "targets": [0, 1]}, INPUTS),
    "empty": (lambda r: {"inputs": [], "targets": []}, INPUTS),
    "strings": (lambda r: {"inputs": [["a", "b", "c", "d"]], "targets": [0]}, INPUTS),
    "string labels": (lambda r: {"inputs": _rows(r, 1), "targets": ["cat"]}, TARGETS),
    "count mismatch": (lambda r: {"inputs": _rows(r), "targets": _labels(r, ROWS - 1)}, TARGETS),
    "no targets": (lambda r: {"inputs": _rows(r)}, TARGETS),
    "not json": (lambda r: b'{"inputs": [[1, 2', (400, "malformed_body", None)),
}


def poison(rng: np.random.Generator) -> Poison:
    kind = list(POISONS)[int(rng.integers(len(POISONS)))]
    make, refusal = POISONS[kind]
    body = make(rng)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()  # NaN/Infinity literals
    return Poison(kind, raw, refusal)


def stream(seed: int) -> tuple[list[bytes], list[bytes | Poison]]:
    """The good batches, and the same batches with one poison before each, in a shuffled mix."""
    rng = np.random.default_rng(seed)
    goods = [good_batch(rng) for _ in range(BATCHES)]
    mixed: list[bytes | Poison] = []
    for good in goods:
        pair: list[bytes | Poison] = [poison(rng), good]
        mixed.extend(pair if rng.random() < 0.5 else pair[::-1])
    return goods, mixed


def run_settings(make_settings: Callable[..., Settings], data: Path, **redis: object) -> Settings:
    database = f"sqlite:///{data / 'gradual.db'}"
    return make_settings(data_dir=data, database_url=database, torch_threads=1, **redis)


@contextmanager
def served(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        body = model_body("m", normalize=False, training={"holdout": 0.1, "eval_every": 25})
        assert client.post("/v1/models", json=body).status_code == 201
        if settings.redis_url is not None:  # trained by its owner: wait until this replica is
            deadline = time.monotonic() + 10
            while client.get("/readyz").json()["detail"].get("owned") != ["m"]:
                assert time.monotonic() < deadline, "the replica never owned the model"
                time.sleep(0.02)
        yield client


def all_finite(client: TestClient) -> bool:
    network = client.app.state.hub.live("m").learner.head.network  # type: ignore[attr-defined]
    tensors = [*network.parameters(), *network.buffers()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def final_state(client: TestClient) -> tuple[str, int]:
    version = checkpoint(client, "m")
    row = client.get(f"/v1/models/m/versions/{version}").json()
    return row["weights_sha256"], row["step"]


@pytest.mark.slow
@pytest.mark.parametrize("sender", list(SENDERS))
def test_poisoned_batches_are_refused_and_leave_the_model_bit_for_bit_unchanged(
    make_settings: Callable[..., Settings], tmp_path: Path, sender: str,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    send = SENDERS[sender]
    poisoned_redis, control_redis = _redis_settings(request, sender)
    goods, mixed = stream(seed=8)
    wrong: list[tuple[str, Outcome]] = []
    kinds = {item.kind for item in mixed if isinstance(item, Poison)}
    assert kinds == set(POISONS)  # every kind of poison is in the mix
    with served(run_settings(make_settings, tmp_path / "poisoned", **poisoned_redis)) as client:
        for index, item in enumerate(mixed):
            if isinstance(item, Poison):
                outcome = send(client, item.body)
                if (outcome.status, outcome.code, outcome.field) != item.refusal:
                    wrong.append((item.kind, outcome))
            else:
                assert send(client, item).status == 200
            assert all_finite(client), f"non-finite after item {index}"
            if index % 100 == 0:
                assert client.get("/healthz").status_code == 200
        poisoned = final_state(client)
    with served(run_settings(make_settings, tmp_path / "control", **control_redis)) as control:
        for good in goods:
            assert send(control, good).status == 200
        clean = final_state(control)
    assert wrong == []
    assert poisoned == clean
    assert poisoned[1] > 0.9 * BATCHES  # about one step per good batch: all of them trained


def _redis_settings(
    request: pytest.FixtureRequest, sender: str
) -> tuple[dict[str, object], dict[str, object]]:
    """Through Redis, the poisoned and the control run each get a key prefix of their own."""
    if sender != "redis":
        return {}, {}
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    return (
        {"redis_url": url, "redis_prefix": f"{prefix}-p"},
        {"redis_url": url, "redis_prefix": f"{prefix}-c"},
    )
