"""The data directory (log, weights and SQLite file, the embedded default) turning read-only
mid-stream, as ext4 does after an I/O error, met by a real server.

Every write after it is answered 503 `storage_unavailable` (never a 500, never a reset
connection) and /readyz answers 503 while predictions are still served. The server is then
stopped, the filesystem checked and mounted again, and the server restarted: it predicts bit
for bit as before, counts every acknowledged batch once, trains the refused batches when
they are resent, and trains nothing when every batch id is resent.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_durability import Server
from tests.factories import batch, blobs, model_body, ndjson, numbered_batches, rows
from tests.faults.mounts import ext4, read_only, repair

IMAGE_BYTES = 32 * 1024 * 1024
BATCH_ROWS = 64
BEFORE, DURING = 6, 4  # batches acknowledged before the fault, and sent while it lasts
MODEL = model_body(
    "m", training={
        "batch_size": 32, "holdout": 0.0, "eval_every": 1, "promote": "latest",
        "patience": 10_000, "rollback_tolerance": None, "keep_versions": 3,
    },
)  # fmt: skip
PROBE = rows(6, seed=42)
SETTINGS = {"GRADUAL_STORAGE_RESERVE_BYTES": str(1024 * 1024)}  # the image is small


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    resets: int = 0
    refusals: list[tuple[int, str, str | None, bool]] = field(default_factory=list)
    ready_while_read_only: tuple[int, dict[str, Any]] = (0, {})
    predicted_while_read_only: int = 0
    stopped: int | None = None  # the server's exit code after SIGTERM on a read-only disk
    before: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    samples_after: int = 0
    resent_refused: list[bool] = field(default_factory=list)  # `duplicate` of each resend
    resent: dict[str, Any] = field(default_factory=dict)
    samples_end: int = 0


def post(server: Server, outcome: Outcome, path: str, body: Any) -> httpx.Response | None:
    try:
        response = server.http.post(path, json=body)
    except httpx.TransportError:
        outcome.resets += 1
        return None
    outcome.statuses[response.status_code] += 1
    return response


def while_read_only(server: Server, outcome: Outcome, lines: list[dict[str, Any]]) -> None:
    for line in lines:
        response = post(server, outcome, "/v1/models/m/partial-fit", line)
        if response is not None:
            body = response.json()
            retry = "retry-after" in response.headers
            outcome.refusals.append((response.status_code, body["code"], body["field"], retry))
    ready = server.http.get("/readyz")
    outcome.ready_while_read_only = (ready.status_code, ready.json())
    predicted = post(server, outcome, "/v1/models/m/predict", {"inputs": PROBE})
    outcome.predicted_while_read_only = predicted.status_code if predicted else 0
    outcome.before = server.http.post("/v1/models/m/predict", json={"inputs": PROBE}).json()


def after_repair(server: Server, outcome: Outcome, lines: list[dict[str, Any]]) -> None:
    outcome.after = server.http.post("/v1/models/m/predict", json={"inputs": PROBE}).json()
    outcome.samples_after = server.http.get("/v1/models/m").json()["samples_seen"]
    for line in lines[BEFORE:]:
        response = post(server, outcome, "/v1/models/m/partial-fit", line)
        outcome.resent_refused.append(bool(response and response.json().get("duplicate")))
    resent = server.http.post(
        "/v1/models/m/partial-fit", content=ndjson(lines),
        headers={"content-type": "application/x-ndjson"},
    )  # fmt: skip
    outcome.resent = json.loads(resent.text.splitlines()[-1])["summary"]
    outcome.samples_end = server.http.get("/v1/models/m").json()["samples_seen"]


def run(tmp_path: Path) -> Outcome:
    outcome, image, data = Outcome(), tmp_path / "data.img", tmp_path / "data"
    lines = numbered_batches(BEFORE + DURING, rows=BATCH_ROWS, seed=3)
    with ext4(data, image, IMAGE_BYTES):
        server = Server(data, tmp_path / "server.log", SETTINGS)
        try:
            assert server.start(None)
            assert server.http.post("/v1/models", json=MODEL).status_code == 201
            validation = batch(*blobs(200, seed=7))
            assert server.http.post("/v1/models/m/validation", json=validation).status_code == 200
            for line in lines[:BEFORE]:
                response = post(server, outcome, "/v1/models/m/partial-fit", line)
                assert response is not None
                assert response.status_code == 200, response.text
            server.http.get("/v1/models/m/versions")  # answered once the history is written
            read_only(data)
            while_read_only(server, outcome, lines[BEFORE:])
        finally:
            server.stop()
        assert server.process is not None
        outcome.stopped = server.process.returncode
        repair(data, image)
        restarted = Server(data, tmp_path / "server.log", SETTINGS)
        try:
            assert restarted.start(None)
            after_repair(restarted, outcome, lines)
        finally:
            restarted.stop()
    return outcome


@pytest.fixture(scope="module")
def read_only_run(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return run(tmp_path_factory.mktemp("read-only"))


def test_writes_to_a_read_only_data_dir_are_refused_with_503(read_only_run: Outcome) -> None:
    assert read_only_run.refusals == [(503, "storage_unavailable", "log", True)] * DURING


def test_a_read_only_data_dir_causes_no_500_and_no_reset_connection(
    read_only_run: Outcome,
) -> None:
    assert read_only_run.resets == 0
    assert set(read_only_run.statuses) <= {200, 503}


def test_readyz_is_503_while_the_data_dir_is_read_only_and_predictions_are_served(
    read_only_run: Outcome,
) -> None:
    status, body = read_only_run.ready_while_read_only
    assert (status, body["status"]) == (503, "storage_unavailable")
    assert body["detail"]["predictions"] == "served"
    assert read_only_run.predicted_while_read_only == 200


def test_sigterm_on_a_read_only_data_dir_stops_cleanly(read_only_run: Outcome) -> None:
    assert read_only_run.stopped == 0


def test_restart_after_a_read_only_data_dir_predicts_bit_for_bit(read_only_run: Outcome) -> None:
    assert read_only_run.after == read_only_run.before
    assert read_only_run.samples_after == BEFORE * BATCH_ROWS


def test_batches_refused_on_a_read_only_data_dir_train_once_when_resent(
    read_only_run: Outcome,
) -> None:
    assert read_only_run.resent_refused == [False] * DURING
    assert read_only_run.samples_end == (BEFORE + DURING) * BATCH_ROWS
    assert (read_only_run.resent["duplicates"], read_only_run.resent["trained"]) == (
        BEFORE + DURING, 0,
    )  # fmt: skip
