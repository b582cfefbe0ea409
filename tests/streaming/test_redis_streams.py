"""Redis Streams ingest in one replica: the real app over HTTP with real Redis and torch.

The stream replaces the local write-ahead log: HTTP partial-fit adds entries, producers may
`XADD` their own, the model's owner applies them in order and sets bad ones aside.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from fastapi.testclient import TestClient

from service.config import Settings
from tests.factories import (
    batches,
    blobs,
    fit,
    labelled,
    model_body,
    model_state,
    ndjson,
    numbered_batches,
)
from tests.live_server import free_port

Start = Callable[..., TestClient]


@pytest.fixture
def cluster_settings(
    make_settings: Callable[..., Settings], redis_url: str, redis_prefix: str
) -> Settings:
    return make_settings(
        redis_url=redis_url, redis_prefix=redis_prefix, lease_ttl_s=1.0, sync_every_s=0.3
    )


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def owner(start: Start, cluster_settings: Settings) -> TestClient:
    client = start(cluster_settings)
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    wait_for(lambda: client.get("/readyz").json()["detail"]["owned"] == ["m"])
    return client


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return result


def test_readyz_names_redis_and_the_models_this_replica_owns(owner: TestClient) -> None:
    detail = owner.get("/readyz").json()["detail"]
    assert detail["redis"] == "ok"
    assert detail["owned"] == ["m"]


def test_partial_fit_through_the_stream_answers_with_the_trained_step(
    owner: TestClient,
) -> None:
    first = fit(owner, "m", labelled(8, seed=1) | {"batch_id": "a"})
    second = fit(owner, "m", labelled(8, seed=2) | {"batch_id": "b"})
    assert (first["step"], first["samples_seen"], first["duplicate"]) == (1, 8, False)
    assert (second["step"], second["samples_seen"]) == (2, 16)


def test_resent_batch_id_is_a_duplicate_and_trains_nothing(owner: TestClient) -> None:
    fit(owner, "m", labelled(8, seed=1) | {"batch_id": "a"})
    again = fit(owner, "m", labelled(8, seed=1) | {"batch_id": "a"})
    assert again["duplicate"] is True
    assert model_state(owner, "m")["samples_seen"] == 8


def test_batch_id_is_remembered_in_redis_with_the_entry_it_added(
    owner: TestClient, rdb: redis.Redis, redis_prefix: str
) -> None:
    fit(owner, "m", labelled(8, seed=1) | {"batch_id": "a"})
    entry_id = rdb.get(f"{redis_prefix}:m:batch:a")
    assert entry_id is not None
    assert b"-" in entry_id
    assert rdb.ttl(f"{redis_prefix}:m:batch:a") > 6 * 24 * 3600


def test_producer_xadd_of_json_fields_is_trained_by_the_owner(
    owner: TestClient, rdb: redis.Redis, redis_prefix: str
) -> None:
    batch = labelled(8, seed=3)
    rdb.xadd(
        f"{redis_prefix}:m:batches",
        {"batch_id": "p1", "inputs": orjson.dumps(batch["inputs"]),
         "targets": orjson.dumps(batch["targets"])},
    )  # fmt: skip
    assert wait_for(lambda: model_state(owner, "m")["samples_seen"] == 8)


def test_producer_xadd_of_safetensors_arrays_is_trained(
    owner: TestClient, rdb: redis.Redis, redis_prefix: str
) -> None:
    import numpy as np
    from safetensors.numpy import save

    batch = labelled(8, seed=4)
    arrays = save({
        "inputs": np.asarray(batch["inputs"], np.float32),
        "targets": np.asarray(batch["targets"], np.int64),
    })  # fmt: skip
    rdb.xadd(f"{redis_prefix}:m:batches", {"arrays": arrays})
    assert wait_for(lambda: model_state(owner, "m")["samples_seen"] == 8)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"inputs": "[[1, 2]]", "targets": "[0]"}, "inputs"),
        ({"inputs": "[[0, 0, 0, 0]]", "targets": "[9]"}, "targets"),
        ({"inputs": "not json", "targets": "[0]"}, "inputs"),
        ({"inputs": "[[NaN, 0, 0, 0]]", "targets": "[0]"}, "inputs"),
        ({"targets": "[0]"}, "inputs"),
        ({"arrays": "garbage"}, "arrays"),
        ({"kind": "explode"}, "kind"),
    ],
)
def test_bad_entry_is_dead_lettered_with_its_reason_and_acknowledged(
    owner: TestClient, rdb: redis.Redis, redis_prefix: str, fields: dict[str, str], field: str
) -> None:
    source = rdb.xadd(f"{redis_prefix}:m:batches", fields)  # type: ignore[arg-type]
    letters = wait_for(lambda: rdb.xrange(f"{redis_prefix}:m:dead"))
    ((_, letter),) = letters
    assert letter[b"source_id"] == source
    assert orjson.loads(letter[b"reason"])["field"] == field
    pending = rdb.xpending(f"{redis_prefix}:m:batches", "gradual")
    assert pending["pending"] == 0
    assert model_state(owner, "m")["samples_seen"] == 0


def test_good_entries_after_a_bad_one_still_train(
    owner: TestClient, rdb: redis.Redis, redis_prefix: str
) -> None:
    rdb.xadd(f"{redis_prefix}:m:batches", {"inputs": "[[1]]", "targets": "[0]"})
    fit(owner, "m", labelled(8, seed=1))
    assert model_state(owner, "m")["samples_seen"] == 8
    assert rdb.xlen(f"{redis_prefix}:m:dead") == 1


def test_ndjson_stream_goes_through_redis_in_order(owner: TestClient) -> None:
    lines = numbered_batches(50, rows=4, seed=5)
    response = owner.post(
        "/v1/models/m/partial-fit", content=ndjson(lines),
        headers={"content-type": "application/x-ndjson"},
    )  # fmt: skip
    out = [orjson.loads(line) for line in response.text.splitlines()]
    assert [line["step"] for line in out[:-1]] == list(range(1, 51))
    assert out[-1]["summary"]["trained"] == 200
    resent = owner.post(
        "/v1/models/m/partial-fit", content=ndjson(lines),
        headers={"content-type": "application/x-ndjson"},
    )  # fmt: skip
    assert orjson.loads(resent.text.splitlines()[-1])["summary"]["duplicates"] == 50


def test_commands_go_through_the_stream_in_order_with_batches(owner: TestClient) -> None:
    fit(owner, "m", labelled(8, seed=1))
    assert owner.post("/v1/models/m/stop").status_code == 200
    assert model_state(owner, "m")["state"] == "stopped"
    version = owner.post("/v1/models/m/versions")
    assert version.status_code == 201
    assert version.json()["step"] == 1


def test_entries_are_acknowledged_and_trimmed_once_a_snapshot_holds_them(
    owner: TestClient, rdb: redis.Redis, redis_prefix: str
) -> None:
    for i in range(5):
        fit(owner, "m", labelled(8, seed=i))
    stream = f"{redis_prefix}:m:batches"
    assert rdb.xpending(stream, "gradual")["pending"] == 5  # no snapshot since the first
    assert owner.post("/v1/models/m/versions").status_code == 201  # a transition: snapshot
    wait_for(lambda: rdb.xpending(stream, "gradual")["pending"] == 0)
    assert rdb.xlen(stream) <= 1


def test_full_stream_backlog_answers_429_with_retry_after(
    start: Start, cluster_settings: Settings, rdb: redis.Redis, redis_prefix: str
) -> None:
    rdb.set(f"{redis_prefix}:m:lease", "someone-else:999", px=60_000)  # nobody here may own it
    client = start(cluster_settings.model_copy(update={"stream_backlog": 3}))
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    answers = [
        client.post("/v1/models/m/partial-fit", params={"wait": "false"}, json=labelled(4, seed=i))
        for i in range(5)
    ]  # fmt: skip
    codes = [answer.status_code for answer in answers]
    assert codes == [202, 202, 202, 429, 429]
    assert answers[-1].headers["retry-after"] == "1"
    assert answers[-1].json()["code"] == "queue_full"


def test_restart_resumes_from_the_committed_snapshot_and_the_stream(
    start: Start, cluster_settings: Settings
) -> None:
    first = start(cluster_settings)
    assert first.post("/v1/models", json=model_body("m")).status_code == 201
    for i in range(6):
        fit(first, "m", labelled(8, seed=i) | {"batch_id": f"b{i}"})
    before = first.post("/v1/models/m/predict", json={"inputs": labelled(4, seed=9)["inputs"]})
    first.__exit__(None, None, None)
    again = start(cluster_settings)
    wait_for(lambda: again.get("/readyz").json()["detail"]["owned"] == ["m"])
    assert model_state(again, "m")["samples_seen"] == 48
    after = again.post("/v1/models/m/predict", json={"inputs": labelled(4, seed=9)["inputs"]})
    assert after.json() == before.json()
    assert fit(again, "m", labelled(8, seed=0) | {"batch_id": "b0"})["duplicate"] is True


def test_without_redis_the_service_starts_unready_and_refuses_batches_with_503(
    start: Start, make_settings: Callable[..., Settings]
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    client = start(make_settings(redis_url=dead, lease_ttl_s=1.0, sync_every_s=0.3))
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["detail"]["redis"].startswith("unreachable")
    refused = client.post("/v1/models/m/partial-fit", json=labelled(4, seed=1))
    assert refused.status_code == 503
    assert refused.json()["code"] == "unavailable"
    assert refused.headers["retry-after"] == "1"
    assert (
        client.post(
            "/v1/models/m/predict", json={"inputs": labelled(2, seed=2)["inputs"]}
        ).status_code
        == 200
    )


RACE = model_body("m", training={"holdout": 0.25, "eval_every": 2}) | {
    "search": {
        "variations": [{}, {"hidden": [2]}, {"optimizer.lr": 0.05, "dropout": 0.3}],
        "budget": 2,
        "survivors": 2,
    }
}


def _candidates(client: TestClient) -> list[dict[str, Any]]:
    response = client.get("/v1/models/m/candidates")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["candidates"]
    return found


def _timeless(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != "created_at"}


def _owning(client: TestClient, *, create: bool) -> TestClient:
    if create:
        assert client.post("/v1/models", json=RACE).status_code == 201
    wait_for(lambda: client.get("/readyz").json()["detail"]["owned"] == ["m"])
    return client


def test_a_race_learns_through_the_stream_and_a_restart_continues_it_exactly(
    start: Start, cluster_settings: Settings, tmp_path: Path
) -> None:
    """A race (every candidate steps on each entry; rounds retire the worst) runs in Redis
    mode as in one process: restarted half-way from the committed snapshot and the stream, it
    ends with the candidates, scores and counters of a run that was never restarted."""
    x, y = blobs(600, seed=5)
    stream = batches(x, y, 40)
    other = tmp_path / "reference"
    reference = _owning(
        start(
            cluster_settings.model_copy(
                update={
                    "data_dir": other, "database_url": f"sqlite:///{other / 'gradual.db'}",
                    "redis_prefix": f"{cluster_settings.redis_prefix}-reference",
                }
            )
        ),
        create=True,
    )  # fmt: skip
    for batch in stream:
        fit(reference, "m", batch)
    expected = (_candidates(reference), _timeless(model_state(reference, "m")))
    reference.__exit__(None, None, None)

    first = _owning(start(cluster_settings), create=True)
    for batch in stream[:8]:
        fit(first, "m", batch)
    first.__exit__(None, None, None)
    again = _owning(start(cluster_settings), create=False)
    for batch in stream[8:]:
        fit(again, "m", batch)
    found = _candidates(again)
    assert (found, _timeless(model_state(again, "m"))) == expected
    assert [c["state"] for c in found].count("retired") == 1, "a halving should have run"
