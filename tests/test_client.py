"""The Python client (sync and async) against the real app: bodies, answers, errors, retries."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.client import (
    AsyncGradualClient,
    GradualClient,
    GradualClientError,
    GradualConnectionError,
    Queued,
    RetryPolicy,
)
from service.client.retry import Tally, retry_after_seconds, wait_before_retry
from service.config import Settings
from tests.factories import blobs, model_body

FAST_RETRIES = RetryPolicy(attempts=200, backoff=0.002, max_wait=0.01)


def spec_of(body: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    return body["name"], body["spec"], body["optimizer"], body["training"]


def create(gradual: GradualClient, name: str = "m", **overrides: Any) -> None:
    name, spec, optimizer, training = spec_of(model_body(name, **overrides))
    gradual.create(name, spec, optimizer, training, seed=1)


@pytest.fixture
def gradual(client: TestClient) -> Iterator[GradualClient]:
    with GradualClient(http=client, retry=FAST_RETRIES) as made:
        yield made


@pytest.fixture
def content_types(client: TestClient) -> list[str]:
    """The content type of every request the test client sends."""
    seen: list[str] = []
    client.event_hooks["request"].append(lambda r: seen.append(r.headers.get("content-type", "")))
    return seen


def batches(count: int, rows: int, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    x, y = blobs(count * rows, seed=seed)
    return [(x[i : i + rows], y[i : i + rows]) for i in range(0, count * rows, rows)]


# -- models, predictions, versions ---------------------------------------------------------


def test_create_get_list_and_delete_round_trip(gradual: GradualClient) -> None:
    name, spec, optimizer, training = spec_of(model_body("iris", inputs=4, outputs=3))
    made = gradual.create(name, spec, optimizer, training, seed=7)
    assert (made.name, made.task, made.seed, made.step) == ("iris", "classification", 7, 0)
    assert (made.spec["hidden"], made.optimizer["lr"]) == ([16], 0.01)
    assert isinstance(made.created_at, datetime)
    assert gradual.get("iris").served_version == 1
    assert [model.name for model in gradual.list()] == ["iris"]
    gradual.delete("iris")
    assert gradual.list() == []


def test_numpy_goes_as_safetensors_lists_as_json_and_both_train_alike(
    gradual: GradualClient, content_types: list[str]
) -> None:
    create(gradual, "lists")
    create(gradual, "arrays")
    x, y = blobs(48)
    by_list = gradual.partial_fit("lists", x.tolist(), y.tolist())
    by_array = gradual.partial_fit("arrays", x, y)
    assert content_types[-2:] == ["application/json", "application/x-safetensors"]
    assert (by_list.step, by_list.samples_seen) == (by_array.step, by_array.samples_seen) == (3, 48)
    probe = x[:6]
    np.testing.assert_array_equal(
        gradual.predict_proba("lists", probe.tolist()), gradual.predict_proba("arrays", probe)
    )


def test_array_like_objects_are_sent_as_arrays(
    gradual: GradualClient, content_types: list[str]
) -> None:
    class Frame:  # what pandas offers NumPy: the array protocol
        def __init__(self, values: np.ndarray) -> None:
            self.values = values

        def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
            return self.values

    create(gradual)
    x, y = blobs(16)
    assert gradual.partial_fit("m", Frame(x), Frame(y)).trained == 16
    assert content_types[-1] == "application/x-safetensors"
    assert gradual.predict("m", Frame(x)).shape == (16,)


def test_pandas_frames_and_series_train_and_predict(gradual: GradualClient) -> None:
    pandas = pytest.importorskip("pandas")
    create(gradual)
    x, y = blobs(32)
    frame = pandas.DataFrame(x, columns=["a", "b", "c", "d"])
    assert gradual.partial_fit("m", frame, pandas.Series(y)).trained == 32
    np.testing.assert_array_equal(gradual.predict("m", frame), gradual.predict("m", x))


def test_predict_gives_labels_and_predict_proba_rows_that_sum_to_one(
    gradual: GradualClient,
) -> None:
    create(gradual)
    x, y = blobs(64)
    gradual.partial_fit("m", x, y)
    labels, probabilities = gradual.predict("m", x), gradual.predict_proba("m", x)
    assert (labels.dtype.kind, labels.shape) == ("i", (64,))
    assert probabilities.shape == (64, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), labels)


def test_regressor_predicts_values_and_has_no_probabilities(gradual: GradualClient) -> None:
    create(gradual, "r", task="regression", outputs=1)
    x, _ = blobs(32)
    gradual.partial_fit("r", x, x.sum(axis=1))
    assert gradual.predict("r", x).dtype.kind == "f"
    with pytest.raises(ValueError, match="regressor"):
        gradual.predict_proba("r", x)


def test_checkpoint_promote_rollback_and_events(gradual: GradualClient) -> None:
    create(gradual, training={"promote": "manual"})
    x, y = blobs(32)
    gradual.partial_fit("m", x, y)
    second = gradual.checkpoint("m")
    assert (second.version, second.parent, second.step, second.served) == (2, 1, 2, False)
    assert gradual.promote("m", 2).served
    assert gradual.prediction("m", x).version == 2
    assert gradual.prediction("m", x, version=1).version == 1
    gradual.partial_fit("m", x, y)
    assert gradual.rollback("m", 1).served
    model = gradual.get("m")
    assert (model.served_version, model.head_version) == (1, 1)
    assert [v.version for v in gradual.versions("m")] == [1, 2]
    kinds = [event.kind for event in gradual.events("m")]
    assert kinds[0] == "created"
    assert {"checkpoint", "promote", "rollback"} <= set(kinds)
    last = gradual.events("m")[-1].id
    assert gradual.events("m", since=last) == []


# -- errors --------------------------------------------------------------------------------


def test_service_errors_carry_status_code_message_and_field(gradual: GradualClient) -> None:
    name, spec, optimizer, training = spec_of(model_body("m"))
    with pytest.raises(GradualClientError) as refused:
        gradual.create(name, spec | {"dropout": 1.5}, optimizer, training)
    assert (refused.value.status, refused.value.code) == (422, "invalid_field")
    assert refused.value.field == "spec.dropout"
    gradual.create(name, spec, optimizer, training)
    with pytest.raises(GradualClientError) as exists:
        gradual.create(name, spec, optimizer, training)
    assert (exists.value.status, exists.value.code, exists.value.field) == (
        409,
        "model_exists",
        "name",
    )
    with pytest.raises(GradualClientError) as wrong:
        gradual.predict("m", np.zeros((2, 5)))
    assert (wrong.value.code, wrong.value.field) == ("invalid_input", "inputs")
    with pytest.raises(GradualClientError) as missing:
        gradual.versions("nope")
    assert (missing.value.status, missing.value.code) == (404, "model_not_found")


def test_unreachable_service_raises_a_connection_error() -> None:
    policy = RetryPolicy(attempts=2, backoff=0.0)
    gradual = GradualClient("http://127.0.0.1:9", retry=policy, timeout=2)
    with gradual, pytest.raises(GradualConnectionError) as failed:
        gradual.list()
    assert (failed.value.status, failed.value.code) == (0, "connection_error")


def test_non_numeric_data_is_refused_before_sending(gradual: GradualClient) -> None:
    with pytest.raises(TypeError, match="targets must be numbers"):
        gradual.partial_fit("m", np.zeros((2, 4)), np.array(["a", "b"]))


# -- retries -------------------------------------------------------------------------------


def response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


@pytest.mark.parametrize(
    ("outcome", "idempotent", "wait"),
    [
        (response(429, **{"Retry-After": "2"}), False, 2.0),
        (response(429, **{"Retry-After": "120"}), False, 30.0),  # capped by max_wait
        (response(429), False, 0.5),  # no Retry-After: the backoff
        (response(503, **{"Retry-After": "1"}), False, 1.0),
        (response(422), True, None),
        (response(200), True, None),
        (httpx.ConnectError("refused"), False, 0.5),  # nothing was sent: always safe
        (httpx.ReadError("reset"), True, 0.5),
        (httpx.ReadError("reset"), False, None),  # may have been applied: not resent
    ],
)
def test_retry_decisions(outcome: Any, idempotent: bool, wait: float | None) -> None:
    policy = RetryPolicy(attempts=3, backoff=0.5, max_wait=30.0)
    decided = wait_before_retry(
        outcome, attempt=0, idempotent=idempotent, policy=policy, tally=Tally()
    )
    assert decided == wait


def test_retries_stop_after_the_policy_s_attempts() -> None:
    policy = RetryPolicy(attempts=3)
    wait = [
        wait_before_retry(response(429), attempt=n, idempotent=True, policy=policy, tally=Tally())
        for n in range(3)
    ]
    assert wait == [0.2, 0.2, None]


def test_retry_after_may_be_an_http_date() -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    seconds = retry_after_seconds(soon)
    assert seconds is not None
    assert 28 <= seconds <= 30
    assert retry_after_seconds("garbage") is None


def test_stream_against_a_full_queue_waits_out_429s_and_applies_each_batch_once(
    make_settings: Callable[..., Settings], start: Callable[..., TestClient]
) -> None:
    client = start(make_settings(queue_batches=1))
    with GradualClient(http=client, retry=FAST_RETRIES) as gradual:
        create(gradual)
        report = gradual.stream("m", batches(12, 128), id_prefix="run")
        assert report.throttled > 0
        assert report.batch_ids == [f"run-{n}" for n in range(12)]
        assert (report.batches, report.duplicates) == (12, 0)
        assert report.last is not None
        assert report.last.step == 12 * 128 // 16
        model = gradual.get("m")
        assert (model.step, model.samples_seen) == (96, 12 * 128)
        again = gradual.stream("m", batches(12, 128), id_prefix="run")
        assert again.duplicates == 12
        assert gradual.get("m").step == 96


class LosingAnswers(httpx.BaseTransport):
    """Delivers every request to the app, but loses the answers to the partial-fit calls
    numbered in `lose` (1 is the first), as a connection reset after the request would."""

    def __init__(self, app: httpx.Client, lose: set[int]) -> None:
        self.app, self.lose, self.fits, self.lost = app, lose, 0, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.app.send(request)
        if request.url.path.endswith("/partial-fit"):
            self.fits += 1
            if self.fits in self.lose:
                self.lost += 1
                raise httpx.ReadError("connection reset", request=request)
        return answer


def test_stream_resends_batches_whose_answer_was_lost_without_training_them_twice(
    client: TestClient,
) -> None:
    transport = LosingAnswers(client, lose={2, 5, 6, 11})
    with httpx.Client(transport=transport, base_url="http://testserver") as http:
        gradual = GradualClient(http=http, retry=FAST_RETRIES)
        create(gradual)
        report = gradual.stream("m", batches(10, 32))
        model = gradual.get("m")
    # lost: batch 1's answer, batch 3's twice, batch 7's; each resend is answered either as a
    # duplicate or (still queued) with the first attempt's outcome, and never trained again
    assert (transport.lost, report.reconnects) == (4, 4)
    assert report.duplicates <= 3
    assert (model.step, model.samples_seen) == (10 * 32 // 16, 10 * 32)


def test_a_lost_answer_to_a_batch_without_id_is_not_resent(client: TestClient) -> None:
    transport = LosingAnswers(client, lose={1})
    with httpx.Client(transport=transport, base_url="http://testserver") as http:
        gradual = GradualClient(http=http, retry=FAST_RETRIES)
        create(gradual)
        x, y = blobs(16)
        with pytest.raises(GradualConnectionError):
            gradual.partial_fit("m", x, y)
        assert gradual.get("m").step == 1  # applied once, not resent


def test_partial_fit_without_waiting_is_queued(gradual: GradualClient) -> None:
    create(gradual)
    x, y = blobs(16)
    queued = gradual.partial_fit("m", x, y, batch_id="q", wait=False)
    assert isinstance(queued, Queued)
    assert queued.batch_id == "q"
    assert gradual.partial_fit("m", x, y, batch_id="q").duplicate


# -- async ---------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def async_gradual(settings: Settings) -> AsyncIterator[AsyncGradualClient]:
    """The app with its lifespan running, reached in process through httpx's ASGI transport."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield AsyncGradualClient(http=http, retry=FAST_RETRIES)


@pytest.mark.anyio
async def test_async_client_creates_trains_predicts_and_raises(settings: Settings) -> None:
    async with async_gradual(settings) as gradual:
        name, spec, optimizer, training = spec_of(model_body("m"))
        await gradual.create(name, spec, optimizer, training, seed=1)
        x, y = blobs(64)
        fitted = await gradual.partial_fit("m", x, y)
        assert (fitted.step, fitted.samples_seen) == (4, 64)
        assert (await gradual.predict("m", x.tolist())).shape == (64,)
        assert (await gradual.predict_proba("m", x)).shape == (64, 3)
        assert (await gradual.checkpoint("m")).version == 2
        assert [v.version for v in await gradual.versions("m")] == [1, 2]
        assert (await gradual.rollback("m", 1)).served
        with pytest.raises(GradualClientError) as missing:
            await gradual.get("nope")
        assert missing.value.code == "model_not_found"


@pytest.mark.anyio
async def test_async_stream_from_an_async_iterator_through_a_full_queue(
    make_settings: Callable[..., Settings],
) -> None:
    async def produce() -> AsyncIterator[tuple[np.ndarray, np.ndarray]]:
        for batch in batches(8, 128, seed=5):
            yield batch

    async with async_gradual(make_settings(queue_batches=1)) as gradual:
        name, spec, optimizer, training = spec_of(model_body("m"))
        await gradual.create(name, spec, optimizer, training)
        report = await gradual.stream("m", produce())
        assert report.throttled > 0
        assert report.batches == 8
        assert (await gradual.get("m")).step == 8 * 128 // 16
