"""A round's history (its version's file and row, its events) is written behind the batch's
answer; whatever reads the history afterwards sees what the answer said."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from service.runtime.writebehind import HistoryThread, Write, WriteBehind
from tests.factories import fit, labelled, model_body, rows

EVERY_ROUND_A_VERSION = model_body(
    "m", training={
        "batch_size": 16, "holdout": 0.25, "eval_every": 1, "promote": "latest",
        "patience": 10_000, "rollback_tolerance": None, "keep_versions": 4,
    },
)  # fmt: skip


def test_the_version_an_answer_names_is_read_back_at_once(client: TestClient) -> None:
    assert client.post("/v1/models", json=EVERY_ROUND_A_VERSION).status_code == 201
    named = []
    for seed in range(12):
        answer = fit(client, "m", labelled(64, seed=seed))
        version = answer["version"]
        named.append(version)
        row = client.get(f"/v1/models/m/versions/{version}")
        assert row.status_code == 200, row.text
        assert row.json()["status"] == "ready"
        assert row.json()["step"] <= answer["step"]
        predicted = client.post(
            "/v1/models/m/predict", json={"inputs": rows(3, seed=1), "version": version}
        )
        assert (predicted.status_code, predicted.json()["version"]) == (200, version)
        rounds = client.get("/v1/models/m/events", params={"kind": "round"}).json()["events"]
        assert rounds[-1]["data"]["step"] == answer["step"]
    listed = client.get("/v1/models/m/versions").json()["versions"]
    assert [v["version"] for v in listed] == list(range(1, max(named) + 1))
    assert max(named) > 3  # rounds made versions


def test_the_history_written_behind_matches_a_restart_that_replays_it(
    start: object, settings: object
) -> None:
    """A restart (no snapshot since the batches: their history is re-derived from the log)
    lists the same versions the running service wrote behind its answers."""
    client: TestClient = start()  # type: ignore[operator]
    assert client.post("/v1/models", json=EVERY_ROUND_A_VERSION).status_code == 201
    for seed in range(8):
        fit(client, "m", labelled(64, seed=seed))
    versions = client.get("/v1/models/m/versions").json()["versions"]
    events = client.get("/v1/models/m/events").json()["events"]
    restarted: TestClient = start()  # type: ignore[operator]
    assert restarted.get("/v1/models/m/versions").json()["versions"] == versions
    assert restarted.get("/v1/models/m/events").json()["events"] == events


# -- the queue itself ----------------------------------------------------------------------


@pytest.fixture
def thread() -> Iterator[HistoryThread]:
    running = HistoryThread()
    yield running
    running.close()


def test_writes_run_in_order_on_the_history_thread(thread: HistoryThread) -> None:
    queue, done, names = WriteBehind(thread, "m"), [], set()

    def write(i: int) -> Write:
        def run(retried: bool) -> None:
            done.append((i, retried))
            names.add(threading.current_thread().name)

        return run

    for i in range(50):
        queue.add(write(i), version=i % 3 == 0)
    queue.flush()
    assert done == [(i, False) for i in range(50)]
    assert queue.pending == 0
    assert queue.failure is None
    assert all(name.startswith("gradual-history") for name in names)


def test_a_failing_write_stops_the_queue_until_it_succeeds(thread: HistoryThread) -> None:
    queue, done, broken = WriteBehind(thread, "m"), [], [True]

    def first(retried: bool) -> None:
        if broken[0]:
            raise OSError(28, "No space left on device")
        done.append(("first", retried))

    queue.add(first, version=True)
    queue.add(lambda retried: done.append(("second", retried)))
    assert queue.idle(timeout=10)
    assert isinstance(queue.failure, OSError)
    assert (queue.pending, done) == (2, [])
    queue.add(lambda retried: done.append(("third", retried)))  # waits behind the failure
    assert queue.idle(timeout=10)
    assert done == []
    with pytest.raises(OSError, match="No space"):
        queue.flush()  # tried again here: still failing
    broken[0] = False
    queue.flush()
    assert done == [("first", True), ("second", False), ("third", False)]
    assert (queue.failure, queue.pending) == (None, 0)


def test_discarding_drops_what_waits(thread: HistoryThread) -> None:
    queue = WriteBehind(thread, "m")

    def failing(_retried: bool) -> None:
        raise OSError(30, "Read-only file system")

    queue.add(failing)
    queue.add(lambda _retried: None)
    assert queue.idle(timeout=10)
    assert queue.pending == 2
    assert queue.discard() == 2
    assert (queue.failure, queue.pending) == (None, 0)
