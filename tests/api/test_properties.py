"""Property tests: whatever is wrong with a batch, the answer is a 4xx and nothing moves.

Hypothesis starts from a valid batch and breaks it one way (a non-finite, huge or non-numeric
cell, a ragged row, a wrong width, an empty or oversized batch, a label of the wrong type or
range, a wrong top-level type, an unknown key), or sends a valid batch to a unicode name. The
head's whole state (weights, optimizer state, generator, counters) must hash the same after.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import Settings
from service.storage.weights import encode
from tests.factories import model_body

MAX_ROWS = 32
EXAMPLES = settings(
    max_examples=200, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip

finite = st.floats(-100, 100, allow_nan=False, width=32)
bad_number = st.sampled_from(
    [float("nan"), float("inf"), float("-inf"), 1e38, -1e38, 1e13, 3.5e38 * 10, 10**30]
)
not_a_number = st.one_of(
    st.text(max_size=5), st.none(), st.dictionaries(st.text(max_size=2), finite, max_size=2),
    st.lists(finite, max_size=2),
)  # fmt: skip


@st.composite
def valid_batch(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    rows = draw(st.lists(st.lists(finite, min_size=4, max_size=4), min_size=n, max_size=n))
    labels = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    return {"inputs": rows, "targets": labels}


@st.composite
def broken_batch(draw: st.DrawFn) -> dict[str, Any] | list[Any] | str:
    batch = draw(valid_batch())
    rows, labels = batch["inputs"], batch["targets"]
    i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 3))
    how = draw(st.sampled_from(BREAKS))
    if how == "cell":
        rows[i][j] = draw(st.one_of(bad_number, not_a_number))
    elif how == "ragged":
        rows[i] = rows[i][:j] if draw(st.booleans()) else [*rows[i], 1.0]
    elif how == "width":
        batch["inputs"] = [[*row, *draw(st.lists(finite, min_size=1, max_size=3))] for row in rows]
    elif how == "empty":
        batch = draw(
            st.sampled_from([{"inputs": [], "targets": []}, {"inputs": [[]], "targets": [0]}])
        )
    elif how == "huge":
        batch = {"inputs": [rows[0]] * (MAX_ROWS + 1), "targets": [0] * (MAX_ROWS + 1)}
    elif how == "label":
        labels[i] = draw(st.one_of(st.integers(3, 10**20), st.integers(-(10**20), -1), bad_number,
                                   not_a_number, st.floats(0.01, 0.99)))  # fmt: skip
    elif how == "count":
        batch["targets"] = labels[:-1] if draw(st.booleans()) else [*labels, 0]
    elif how == "shape":
        other = {"inputs": rows[0], "targets": 0}
        return draw(st.one_of(st.just(rows), st.text(max_size=8), st.just(other)))
    else:
        batch[draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in batch))] = 1
    return batch


BREAKS = ["cell", "ragged", "width", "empty", "huge", "label", "count", "shape", "key"]


def head_digest(client: TestClient) -> str:
    head = client.app.state.hub.live("m").learner.head  # type: ignore[attr-defined]
    return hashlib.sha256(encode(head.checkpoint())).hexdigest()


def started(start: Callable[..., TestClient], make_settings: Callable[..., Settings]) -> TestClient:
    client: TestClient = start(make_settings(max_batch_rows=MAX_ROWS, torch_threads=1))
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    warm = {"inputs": [[0.1, 0.2, 0.3, 0.4]] * 4, "targets": [0, 1, 2, 0]}
    assert client.post("/v1/models/m/partial-fit", json=warm).status_code == 200  # Adam state
    return client


def post(client: TestClient, path: str, body: Any) -> Any:
    content = json.dumps(body).encode()  # NaN and Infinity go out as their JSON5 literals
    return client.post(path, content=content, headers={"content-type": "application/json"})


def test_a_broken_batch_is_a_4xx_and_leaves_the_head_bit_for_bit(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = started(start, make_settings)
    before = head_digest(client)

    @EXAMPLES
    @given(batch=broken_batch(), route=st.sampled_from(["partial-fit", "validation", "predict"]))
    def check(batch: Any, route: str) -> None:
        if route == "predict" and isinstance(batch, dict):
            batch = {k: v for k, v in batch.items() if k != "targets"}
            if "inputs" in batch and all(
                isinstance(r, list) and len(r) == 4 for r in batch["inputs"]
            ):
                return  # a predict of valid rows is fine: the targets were the broken part
        response = post(client, f"/v1/models/m/{route}", batch)
        assert 400 <= response.status_code < 500, (response.status_code, response.text)
        assert set(response.json()) == {"code", "message", "field"}
        assert head_digest(client) == before

    check()


def test_a_batch_for_a_unicode_name_is_a_4xx_and_trains_nothing(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    client = started(start, make_settings)
    before = head_digest(client)

    @EXAMPLES
    @given(name=st.text(min_size=1, max_size=80).filter(lambda n: n != "m"), batch=valid_batch())
    def check(name: str, batch: dict[str, Any]) -> None:
        response = post(client, f"/v1/models/{quote(name, safe='')}/partial-fit", batch)
        assert response.status_code in {404, 422}, (name, response.status_code, response.text)
        assert head_digest(client) == before

    check()


def test_the_head_still_learns_after_the_storm(
    start: Callable[..., TestClient], make_settings: Callable[..., Settings]
) -> None:
    """The digest check is not vacuous: a valid batch does change it."""
    client = started(start, make_settings)
    before = head_digest(client)
    batch = {"inputs": [[1, 2, 3, 4]], "targets": [1]}
    assert post(client, "/v1/models/m/partial-fit", batch).status_code == 200
    assert head_digest(client) != before
