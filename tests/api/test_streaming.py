"""Streamed ingest over HTTP: NDJSON partial-fit, idempotent batch ids, the bounded queue
(429 with Retry-After) and `?wait=false` (202, trained later).

Every model here has `batch_size` 16 and no holdout, so a batch of 8 rows is exactly one
optimizer step: a model's `step` counts the batches it applied.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.factories import (
    blobs,
    crash_image,
    events,
    fit,
    model_body,
    model_state,
    ndjson,
    numbered_batches,
    stream_fit,
)

STREAMED = 1000
WARM_UP = 5  # batches streamed before the 1,000, so the memory measure skips first-use costs
ROWS = 8  # per streamed batch: one optimizer step
FLOOD_ROWS = 512  # per flooding batch: 32 optimizer steps, long enough for a queue to form
FLOOD_REQUESTS = 24
NDJSON_HEADERS = {"content-type": "application/x-ndjson"}
Start = Callable[..., TestClient]


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """One torch thread: for networks this small, more only spin against each other."""
    return make_settings(torch_threads=1)


def create(client: TestClient, name: str = "m", **spec: Any) -> None:
    response = client.post("/v1/models", json=model_body(name, **spec))
    assert response.status_code == 201, response.text


def eventually(probe: Callable[[], Any], *, timeout: float = 15.0) -> Any:
    """`probe()`'s first truthy answer, polled until `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while not (answer := probe()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return answer


def resident_bytes() -> int:
    """This process's resident set size (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


# -- a stream of 1,000 batches, sent twice ------------------------------------------------


@dataclass(frozen=True)
class LongStream:
    first: list[dict[str, Any]]  # the answer to the first stream, summary last
    replay: list[dict[str, Any]]  # the answer to the same 1,000 batch ids streamed again
    rss_growth: int  # resident bytes gained by this process over the first stream
    after_first: dict[str, Any]  # the model after the first stream
    after_replay: dict[str, Any]


@pytest.fixture(scope="module")
def long_stream(tmp_path_factory: pytest.TempPathFactory) -> LongStream:
    """One app, one model: 1,000 batches streamed as NDJSON, then the same batch ids again."""
    data = tmp_path_factory.mktemp("long-stream")
    settings = Settings(
        data_dir=data, database_url=f"sqlite:///{data / 'gradual.db'}", device="cpu",
        torch_threads=1,
    )  # fmt: skip
    lines = numbered_batches(STREAMED, rows=ROWS, seed=1)
    with TestClient(create_app(settings)) as client:
        create(client)
        stream_fit(client, "m", numbered_batches(WARM_UP, rows=ROWS, seed=2, prefix="warm-up"))
        before = resident_bytes()
        first = stream_fit(client, "m", lines)
        growth = resident_bytes() - before
        after_first = model_state(client, "m")
        replay = stream_fit(client, "m", lines)
        return LongStream(first, replay, growth, after_first, model_state(client, "m"))


def test_stream_answers_one_progress_line_per_batch_in_line_order(long_stream: LongStream) -> None:
    progress = long_stream.first[:-1]
    assert [line["line"] for line in progress] == list(range(1, STREAMED + 1))
    assert [line["batch_id"] for line in progress] == [f"b{i}" for i in range(STREAMED)]


def test_stream_trains_each_batch_once_in_order(long_stream: LongStream) -> None:
    progress = long_stream.first[:-1]
    assert [line["step"] for line in progress] == list(range(WARM_UP + 1, WARM_UP + STREAMED + 1))
    assert [line["trained"] for line in progress] == [ROWS] * STREAMED
    assert all(line["train_loss"] is not None for line in progress)


def test_stream_summary_counts_every_batch(long_stream: LongStream) -> None:
    assert long_stream.first[-1]["summary"] == {
        "lines": STREAMED, "batches": STREAMED, "trained": STREAMED * ROWS, "duplicates": 0,
        "skipped": 0, "errors": 0, "step": WARM_UP + STREAMED,
        "samples_seen": (WARM_UP + STREAMED) * ROWS, "version": 1, "state": "training",
    }  # fmt: skip


def test_model_after_the_stream_has_trained_every_row(long_stream: LongStream) -> None:
    model = long_stream.after_first
    assert (model["step"], model["samples_seen"]) == (
        WARM_UP + STREAMED, (WARM_UP + STREAMED) * ROWS,
    )  # fmt: skip


def test_stream_of_1000_batches_keeps_the_process_memory_flat(long_stream: LongStream) -> None:
    assert long_stream.rss_growth < 100 * 1024 * 1024


def test_replaying_1000_batch_ids_trains_none_of_them_again(long_stream: LongStream) -> None:
    replay = long_stream.replay
    assert all(line["duplicate"] is True for line in replay[:-1])
    summary = replay[-1]["summary"]
    assert (summary["duplicates"], summary["batches"], summary["trained"]) == (STREAMED, 0, 0)
    before, after = long_stream.after_first, long_stream.after_replay
    assert (after["step"], after["samples_seen"]) == (before["step"], before["samples_seen"])


# -- bad lines ----------------------------------------------------------------------------

GOOD = numbered_batches(5, rows=ROWS, seed=3)
BAD_LINES = {
    "invalid_json": ('{"inputs": [[1, 2, 3, 4]], "targets": [0', "malformed_body", None),
    "wrong_width": (
        {"inputs": [[1.0, 2.0, 3.0]] * ROWS, "targets": [0] * ROWS},
        "invalid_input",
        "inputs",
    ),
    "class_out_of_range": (
        {"inputs": [[1.0, 2.0, 3.0, 4.0]] * ROWS, "targets": [3] * ROWS},
        "invalid_input",
        "targets",
    ),
}


def with_bad_third_line(kind: str) -> list[dict[str, Any] | str]:
    return [GOOD[0], GOOD[1], BAD_LINES[kind][0], GOOD[3], GOOD[4]]


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_bad_line_gets_an_error_line_naming_its_number(client: TestClient, kind: str) -> None:
    create(client)
    answer = stream_fit(client, "m", with_bad_third_line(kind))
    _, code, field = BAD_LINES[kind]
    errors = [line for line in answer if "error" in line]
    assert len(errors) == 1
    assert errors[0]["line"] == 3
    assert (errors[0]["error"]["code"], errors[0]["error"]["field"]) == (code, field)


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_on_error_skip_trains_the_lines_after_a_bad_one(client: TestClient, kind: str) -> None:
    create(client)
    answer = stream_fit(client, "m", with_bad_third_line(kind), on_error="skip")
    assert [(line["line"], line.get("step")) for line in answer[:-1]] == [
        (1, 1), (2, 2), (3, None), (4, 3), (5, 4),
    ]  # fmt: skip
    summary = answer[-1]["summary"]
    assert (summary["batches"], summary["errors"], summary["step"]) == (4, 1, 4)


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_on_error_stop_applies_the_lines_before_a_bad_one_and_none_after(
    client: TestClient, kind: str
) -> None:
    create(client)
    answer = stream_fit(client, "m", with_bad_third_line(kind), on_error="stop")
    assert [(line["line"], line.get("step")) for line in answer[:-1]] == [(1, 1), (2, 2), (3, None)]
    summary = answer[-1]["summary"]
    assert (summary["lines"], summary["batches"], summary["errors"]) == (3, 2, 1)
    assert model_state(client, "m")["step"] == 2


def test_on_error_stop_leaves_the_ids_after_the_bad_line_unapplied(client: TestClient) -> None:
    create(client)
    stream_fit(client, "m", with_bad_third_line("invalid_json"), on_error="stop")
    again = stream_fit(client, "m", [GOOD[3], GOOD[4]])
    assert [line.get("duplicate", False) for line in again[:-1]] == [False, False]
    assert again[-1]["summary"]["step"] == 4


def refused_at_training() -> dict[str, Any]:
    """Valid rows whose step the trainer refuses: ~1e9 inputs into an unnormalized network
    make a gradient far beyond max_grad_norm (the batch is rejected, nothing applied)."""
    x, y = blobs(ROWS, seed=9)
    return {"inputs": (x * 1e9).tolist(), "targets": y.tolist(), "batch_id": "poison"}


def test_on_error_stop_skips_the_batches_queued_behind_a_refused_step(client: TestClient) -> None:
    create(client, normalize=False)
    lines = [GOOD[0], refused_at_training(), *GOOD[1:]]
    answer = stream_fit(client, "m", lines, on_error="stop")
    assert answer[0]["step"] == 1
    assert (answer[1]["line"], answer[1]["error"]["code"]) == (2, "batch_rejected")
    assert all(line.get("skipped") is True for line in answer[2:-1])
    assert model_state(client, "m")["step"] == 1


def test_on_error_skip_trains_the_batches_behind_a_refused_step(client: TestClient) -> None:
    create(client, normalize=False)
    lines = [GOOD[0], refused_at_training(), *GOOD[1:]]
    answer = stream_fit(client, "m", lines, on_error="skip")
    assert [line.get("step") for line in answer[:-1]] == [1, None, 2, 3, 4, 5]
    assert answer[-1]["summary"]["errors"] == 1


def test_duplicate_lines_are_answered_in_line_order(client: TestClient) -> None:
    create(client)
    stream_fit(client, "m", GOOD[:2])
    answer = stream_fit(client, "m", [GOOD[2], GOOD[0], GOOD[3], GOOD[1]])
    assert [line["line"] for line in answer[:-1]] == [1, 2, 3, 4]


def test_stream_trains_a_line_before_the_rest_of_the_body_is_sent(client: TestClient) -> None:
    """The body is read as it arrives: the first line trains while the client still holds
    back the rest (a server that buffered the body whole would see step 0 here)."""
    create(client)
    seen: list[int] = []

    async def body(http: httpx.AsyncClient) -> AsyncIterator[bytes]:
        yield ndjson(GOOD[:1])
        deadline = time.monotonic() + 15.0
        step = 0
        while step == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            step = (await http.get("/v1/models/m")).json()["step"]
        seen.append(step)
        yield ndjson(GOOD[1:])

    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            url = "/v1/models/m/partial-fit"
            return await http.post(url, content=body(http), headers=NDJSON_HEADERS)

    assert client.portal is not None
    response = client.portal.call(send)
    assert seen == [1]
    summary = orjson.loads(response.text.splitlines()[-1])["summary"]
    assert (summary["batches"], summary["step"]) == (len(GOOD), len(GOOD))


# -- idempotent JSON batches and wait=false ---------------------------------------------------


def test_json_batch_id_sent_twice_is_trained_once(client: TestClient) -> None:
    create(client)
    first = fit(client, "m", GOOD[0])
    second = fit(client, "m", GOOD[0])
    assert (first["duplicate"], first["trained"], first["step"]) == (False, ROWS, 1)
    assert (second["duplicate"], second["trained"], second["step"]) == (True, 0, 1)
    assert model_state(client, "m")["step"] == 1


def test_batch_id_applied_by_a_stream_is_a_duplicate_as_json(client: TestClient) -> None:
    create(client)
    stream_fit(client, "m", GOOD[:2])
    assert fit(client, "m", GOOD[1])["duplicate"] is True


def test_wait_false_answers_202_with_the_queue_position(client: TestClient) -> None:
    create(client)
    response = client.post("/v1/models/m/partial-fit", params={"wait": "false"}, json=GOOD[0])
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["model"], body["batch_id"]) == ("m", GOOD[0]["batch_id"])
    assert body["queued"] >= 1


def test_wait_false_batch_is_trained_after_the_answer(client: TestClient) -> None:
    create(client)
    for batch in GOOD:
        response = client.post("/v1/models/m/partial-fit", params={"wait": "false"}, json=batch)
        assert response.status_code == 202, response.text
    assert eventually(lambda: model_state(client, "m")["step"] == len(GOOD))
    assert model_state(client, "m")["samples_seen"] == len(GOOD) * ROWS


def test_wait_false_batch_id_sent_again_is_a_duplicate(client: TestClient) -> None:
    create(client)
    client.post("/v1/models/m/partial-fit", params={"wait": "false"}, json=GOOD[0])
    again = client.post("/v1/models/m/partial-fit", params={"wait": "false"}, json=GOOD[0])
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert eventually(lambda: model_state(client, "m")["step"] == 1)
    time.sleep(0.2)
    assert model_state(client, "m")["step"] == 1


def test_wait_false_batch_that_fails_is_reported_as_an_event(client: TestClient) -> None:
    create(client, normalize=False)
    response = client.post(
        "/v1/models/m/partial-fit", params={"wait": "false"}, json=refused_at_training()
    )
    assert response.status_code == 202, response.text
    failed = eventually(lambda: events(client, "m", "batch_failed"))
    assert failed[0]["data"]["batch_id"] == "poison"
    assert failed[0]["data"]["error"] == "BatchRejected"
    assert model_state(client, "m")["step"] == 0


# -- a flood beyond the queue bound -------------------------------------------------------


@dataclass(frozen=True)
class Flood:
    client: TestClient
    settings: Settings
    batches: list[dict[str, Any]]
    answers: list[httpx.Response]

    def accepted(self) -> list[dict[str, Any]]:
        return [b for b, r in zip(self.batches, self.answers, strict=True) if r.status_code == 200]

    def refused(self) -> list[dict[str, Any]]:
        return [b for b, r in zip(self.batches, self.answers, strict=True) if r.status_code == 429]


@pytest.fixture
def flood(make_settings: Callable[..., Settings], start: Start) -> Flood:
    """24 batches of 32 steps each, posted at once to a model whose queue holds 2."""
    settings = make_settings(queue_batches=2, retry_after_s=3, torch_threads=1)
    client = start(settings)
    create(client)
    batches = numbered_batches(FLOOD_REQUESTS, rows=FLOOD_ROWS, seed=4, prefix="f")
    barrier = threading.Barrier(FLOOD_REQUESTS)

    def post(batch: dict[str, Any]) -> httpx.Response:
        barrier.wait()
        return client.post("/v1/models/m/partial-fit", json=batch)

    with ThreadPoolExecutor(FLOOD_REQUESTS) as pool:
        answers = list(pool.map(post, batches))
    return Flood(client, settings, batches, answers)


def test_flood_beyond_the_queue_bound_gets_429_queue_full_with_retry_after(flood: Flood) -> None:
    statuses = sorted({answer.status_code for answer in flood.answers})
    assert statuses == [200, 429]
    for answer in flood.answers:
        if answer.status_code == 429:
            assert answer.json()["code"] == "queue_full"
            assert answer.headers["retry-after"] == "3"


def test_flood_trains_exactly_the_accepted_batches(flood: Flood) -> None:
    steps = FLOOD_ROWS // 16
    model = model_state(flood.client, "m")
    assert model["step"] == len(flood.accepted()) * steps
    assert model["samples_seen"] == len(flood.accepted()) * FLOOD_ROWS


def test_refused_batch_ids_train_when_retried(flood: Flood) -> None:
    for batch in flood.refused():
        assert fit(flood.client, "m", batch)["duplicate"] is False
    assert model_state(flood.client, "m")["step"] == FLOOD_REQUESTS * (FLOOD_ROWS // 16)


def test_refused_batches_leave_nothing_in_the_log_to_replay(
    flood: Flood, start: Start, tmp_path: Path
) -> None:
    """A crash image taken after the flood restarts with exactly the accepted batches."""
    copy = start(crash_image(flood.settings, tmp_path / "image"))
    assert model_state(copy, "m")["step"] == len(flood.accepted()) * (FLOOD_ROWS // 16)
