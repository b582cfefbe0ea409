"""A full disk, met by a real server: the write-ahead log, the weight files and the SQLite file
each on a small tmpfs of its own, filled in turn by a ballast file and emptied again.

While a directory is full every write is answered 507 `storage_full` naming it (never a 500,
never a reset connection), /readyz answers 503 and says predictions are still served, and
predictions are; once the ballast goes /readyz is 200 again by itself and the refused batches
train when resent. The log's filesystem is left with a few kilobytes, less than one record, so
the log's own write fails half-way and must be cut back. At the end every batch id is resent
(nothing trains), and a SIGKILL and restart predicts bit for bit as before.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from tests.api.test_durability import Server
from tests.factories import batch, blobs, model_body, ndjson, numbered_batches, rows
from tests.faults.mounts import fill, tmpfs

MOUNT_BYTES = 8 * 1024 * 1024
LOG_SLACK = 8 * 1024  # free bytes left on the log's filesystem: less than one record
BATCH_ROWS = 512  # a record of ~25 KB
MODEL = model_body(
    "m", training={
        "batch_size": 64, "holdout": 0.0, "eval_every": 1, "promote": "latest",
        "patience": 10_000, "rollback_tolerance": None, "keep_versions": 3,
    },
)  # fmt: skip
PROBE = rows(6, seed=42)
RESOURCES = ("log", "weights", "database")
PER_PHASE = 3  # batches acknowledged before a directory fills, and refused while it is full


@dataclass
class Answers:
    """Every answer the stream got, by status, and the refusals' bodies and headers."""

    statuses: Counter[int] = field(default_factory=Counter)
    resets: int = 0
    refusals: dict[str, list[tuple[int, str, str | None, str | None]]] = field(default_factory=dict)
    ready_while_full: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    ready_after: dict[str, int] = field(default_factory=dict)
    predicted_while_full: dict[str, int] = field(default_factory=dict)
    free_while_full: dict[str, float] = field(default_factory=dict)
    resent_refused: list[bool] = field(default_factory=list)  # `duplicate` of each resend


@dataclass(frozen=True)
class Outcome:
    answers: Answers
    acknowledged: int  # distinct batches answered 200
    samples_seen: int
    resent: dict[str, Any]
    before: dict[str, Any]  # predictions before the kill
    after: dict[str, Any]  # the same, after the restart
    samples_after: int


class Stream:
    def __init__(self, server: Server, answers: Answers) -> None:
        self.server, self.answers = server, answers
        self.acknowledged: set[str] = set()

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response | None:
        try:
            response = self.server.http.post(path, json=body)
        except httpx.TransportError:
            self.answers.resets += 1
            return None
        self.answers.statuses[response.status_code] += 1
        return response

    def fit(self, line: dict[str, Any]) -> httpx.Response | None:
        response = self.post("/v1/models/m/partial-fit", line)
        if response is not None and response.status_code == 200:
            self.acknowledged.add(line["batch_id"])
        return response

    def ready(self) -> httpx.Response:
        return self.server.http.get("/readyz")

    def metric(self, name: str, resource: str) -> float:
        text = self.server.http.get("/metrics").text
        prefix = f'{name}{{resource="{resource}"}} '
        return float(
            next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :]
        )


def full_phase(stream: Stream, resource: str, mount: Path, lines: list[dict[str, Any]]) -> None:
    """Fills `mount`, streams `lines` (refused), empties it, resends them (accepted)."""
    answers = stream.answers
    stream.server.http.get("/v1/models/m/versions")  # answered once the history is written
    ballast = fill(mount, leave=LOG_SLACK if resource == "log" else 0)
    refused = answers.refusals.setdefault(resource, [])
    for line in lines:
        response = stream.fit(line)
        if response is not None:
            body = response.json()
            refused.append(
                (response.status_code, body.get("code"), body.get("field"),
                 response.headers.get("retry-after"))
            )  # fmt: skip
    ready = stream.ready()
    answers.ready_while_full[resource] = (ready.status_code, ready.json())
    predicted = stream.post("/v1/models/m/predict", {"inputs": PROBE})
    answers.predicted_while_full[resource] = predicted.status_code if predicted else 0
    answers.free_while_full[resource] = stream.metric("gradual_storage_free_bytes", resource)
    ballast.unlink()
    answers.ready_after[resource] = stream.ready().status_code
    for line in lines:
        response = stream.fit(line)
        answers.resent_refused.append(bool(response and response.json().get("duplicate")))


def run(tmp_path: Path) -> Outcome:
    mounts = {name: tmp_path / name for name in RESOURCES}
    with (
        tmpfs(mounts["log"], MOUNT_BYTES),
        tmpfs(mounts["weights"], MOUNT_BYTES),
        tmpfs(mounts["database"], MOUNT_BYTES),
    ):
        settings = {
            "GRADUAL_WEIGHTS_DIR": str(mounts["weights"]),
            "GRADUAL_DATABASE_URL": f"sqlite:///{mounts['database'] / 'gradual.db'}",
            "GRADUAL_STORAGE_RESERVE_BYTES": "0",  # the writes themselves meet the full disk
            "GRADUAL_STORAGE_RETRY_AFTER_S": "7",
        }
        return stream_through_full_disks(tmp_path, mounts, settings)


def stream_through_full_disks(
    tmp_path: Path, mounts: dict[str, Path], settings: dict[str, str]
) -> Outcome:
    server = Server(mounts["log"], tmp_path / "server.log", settings)
    answers = Answers()
    stream = Stream(server, answers)
    lines = numbered_batches(PER_PHASE * (2 * len(RESOURCES) + 1), rows=BATCH_ROWS, seed=3)
    try:
        assert server.start(None)
        assert stream.post("/v1/models", MODEL).status_code == 201  # type: ignore[union-attr]
        validation = stream.post("/v1/models/m/validation", batch(*blobs(200, seed=7)))
        assert validation is not None
        assert validation.status_code == 200
        chunks = [lines[i : i + PER_PHASE] for i in range(0, len(lines), PER_PHASE)]
        for index, resource in enumerate(RESOURCES):
            for line in chunks[2 * index]:
                stream.fit(line)
            full_phase(stream, resource, mounts[resource], chunks[2 * index + 1])
        for line in chunks[-1]:
            stream.fit(line)
        model = server.http.get("/v1/models/m").json()
        resent = server.http.post(
            "/v1/models/m/partial-fit", content=ndjson(lines),
            headers={"content-type": "application/x-ndjson"},
        )  # fmt: skip
        assert resent.status_code == 200, resent.text
        before = server.http.post("/v1/models/m/predict", json={"inputs": PROBE}).json()
        assert server.process is not None
        server.process.kill()
        server.death()
    finally:
        server.stop()
    restarted = Server(mounts["log"], tmp_path / "server.log", settings)
    try:
        assert restarted.start(None)
        after = restarted.http.post("/v1/models/m/predict", json={"inputs": PROBE}).json()
        samples_after = restarted.http.get("/v1/models/m").json()["samples_seen"]
    finally:
        restarted.stop()
    return Outcome(
        answers, len(stream.acknowledged), model["samples_seen"],
        _summary(resent.text), before, after, samples_after,
    )  # fmt: skip


def _summary(text: str) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads(text.splitlines()[-1])["summary"]
    return summary


@pytest.fixture(scope="module")
def full_disks(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    return run(tmp_path_factory.mktemp("full-disks"))


def test_each_full_directory_is_refused_with_507_naming_it(full_disks: Outcome) -> None:
    for resource in RESOURCES:
        assert (
            full_disks.answers.refusals[resource]
            == [(507, "storage_full", resource, "7")] * PER_PHASE
        )


def test_a_full_disk_causes_no_500_and_no_reset_connection(full_disks: Outcome) -> None:
    assert full_disks.answers.resets == 0
    assert set(full_disks.answers.statuses) <= {200, 201, 503, 507}


def test_readyz_is_503_while_a_directory_is_full_and_200_once_space_returns(
    full_disks: Outcome,
) -> None:
    for resource in RESOURCES:
        status, body = full_disks.answers.ready_while_full[resource]
        assert (status, body["status"]) == (503, "storage_full")
        assert body["detail"]["storage"]["field"] == resource
        assert body["detail"]["predictions"] == "served"
        assert full_disks.answers.ready_after[resource] == 200


def test_predictions_are_served_while_a_directory_is_full(full_disks: Outcome) -> None:
    assert full_disks.answers.predicted_while_full == dict.fromkeys(RESOURCES, 200)


def test_free_space_gauge_shows_the_full_directory(full_disks: Outcome) -> None:
    assert full_disks.answers.free_while_full["log"] <= LOG_SLACK
    assert full_disks.answers.free_while_full["weights"] == 0
    assert full_disks.answers.free_while_full["database"] == 0


def test_refused_batches_train_when_resent_and_every_batch_applies_once(
    full_disks: Outcome,
) -> None:
    assert full_disks.answers.resent_refused == [False] * PER_PHASE * len(RESOURCES)
    assert full_disks.acknowledged == PER_PHASE * (2 * len(RESOURCES) + 1)
    assert full_disks.samples_seen == full_disks.acknowledged * BATCH_ROWS
    assert (full_disks.resent["duplicates"], full_disks.resent["trained"]) == (
        full_disks.acknowledged, 0,
    )  # fmt: skip


def test_restart_after_a_full_disk_predicts_bit_for_bit(full_disks: Outcome) -> None:
    assert full_disks.after == full_disks.before
    assert full_disks.samples_after == full_disks.samples_seen


def test_a_directory_under_the_reserve_refuses_changes_before_logging_them(
    start: Any, make_settings: Any
) -> None:
    settings: Settings = make_settings(storage_reserve_bytes=1 << 60)
    client: TestClient = start(settings)
    refused = client.post("/v1/models", json=MODEL)
    assert (refused.status_code, refused.json()["code"]) == (507, "storage_full")
    assert refused.json()["field"] == "log"
    assert "GRADUAL_STORAGE_RESERVE_BYTES" in refused.json()["message"]
    ready = client.get("/readyz")
    assert (ready.status_code, ready.json()["detail"]["predictions"]) == (503, "served")


WIDE = model_body(
    "m", hidden=[256], training={
        "batch_size": 64, "holdout": 0.0, "eval_every": 1, "promote": "latest",
        "patience": 10_000, "rollback_tolerance": None, "keep_versions": 3,
    },
)  # fmt: skip


def test_a_round_whose_version_meets_a_full_disk_applies_once_and_restarts_the_same(
    start: Any, make_settings: Any, tmp_path: Path
) -> None:
    """Space runs out after the check: the batch is logged, trained and acknowledged, and its
    round's version file (~30 KB), written behind the answer, does not fit. Until it is
    written, the model's changes are refused before logging (507 naming the weights, nothing
    applied); once space returns the next change writes it first. Every batch applies once
    (a resend of an acknowledged one is a duplicate), and a restart, which replays the log,
    ends with the versions, counters and predictions of the running service."""
    with tmpfs(tmp_path / "weights", MOUNT_BYTES) as weights:
        # no snapshot after the batches: a restart re-derives all of them from the log
        settings: Settings = make_settings(
            weights_dir=weights, storage_reserve_bytes=0, snapshot_interval_s=3600
        )
        client: TestClient = start(settings)
        assert client.post("/v1/models", json=WIDE).status_code == 201
        assert client.post("/v1/models/m/validation", json=batch(*blobs(200, seed=7))).is_success
        lines = numbered_batches(12, rows=64, seed=3)
        for line in lines[:2]:
            assert client.post("/v1/models/m/partial-fit", json=line).status_code == 200
        client.get("/v1/models/m/versions")  # answered once their history is written
        ballast = fill(weights, leave=LOG_SLACK)
        answers = [client.post("/v1/models/m/partial-fit", json=line) for line in lines[2:8]]
        ballast.unlink()
        refused = [a.json() for a in answers if a.status_code != 200]
        assert {a.status_code for a in answers} <= {200, 507}
        assert {(a["code"], a["field"]) for a in refused} == {("storage_full", "weights")}
        applied = [a.status_code == 200 or "nothing was applied" not in a.text for a in answers]
        assert applied == [a.status_code == 200 for a in answers]
        assert answers[0].status_code == 200  # its version waits; the next ones are refused
        assert 507 in [a.status_code for a in answers]
        again = [client.post("/v1/models/m/partial-fit", json=line) for line in lines[2:8]]
        assert {a.status_code for a in again} == {200}
        assert [a.json().get("duplicate", False) for a in again] == applied
        for line in lines[8:]:
            assert client.post("/v1/models/m/partial-fit", json=line).status_code == 200
        resent = [client.post("/v1/models/m/partial-fit", json=line).json() for line in lines]
        assert [r.get("duplicate") for r in resent] == [True] * len(lines)
        model = client.get("/v1/models/m").json()
        assert model["samples_seen"] == len(lines) * 64
        before = client.post("/v1/models/m/predict", json={"inputs": PROBE}).json()
        versions = client.get("/v1/models/m/versions").json()["versions"]
        restarted: TestClient = start(settings)
        assert restarted.get("/v1/models/m/versions").json()["versions"] == versions
        after = restarted.post("/v1/models/m/predict", json={"inputs": PROBE}).json()
        assert after == before
        again_model = restarted.get("/v1/models/m").json()
        assert {k: v for k, v in again_model.items() if k != "created_at"} == {
            k: v for k, v in model.items() if k != "created_at"
        }
