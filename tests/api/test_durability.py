"""An acknowledged batch is never lost nor applied twice: crash images, torn log tails, the
`durability=checkpoint` trade, and real servers SIGKILLed at every named crash point.

A *crash image* is a copy of the data directory taken while the app is idle and before any
shutdown ran: what a killed process leaves on disk. An app started on it must come back
exactly where the original stood, bit for bit, by replaying the write-ahead log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import struct
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.factories import (
    batch,
    blobs,
    checkpoint,
    crash_image,
    events,
    fit,
    model_body,
    model_state,
    ndjson,
    numbered_batches,
    stream_fit,
)
from tests.live_server import answers_ready, free_port, serve_process

Start = Callable[..., TestClient]


def weights_sha256(client: TestClient, name: str = "m") -> str:
    """The checksum of the head's weights: checkpoint it, read the new version's sha256."""
    number = checkpoint(client, name)
    sha: str = client.get(f"/v1/models/{name}/versions/{number}").json()["weights_sha256"]
    return sha


def versions(client: TestClient, name: str = "m") -> list[dict[str, Any]]:
    response = client.get(f"/v1/models/{name}/versions")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["versions"]
    return found


# -- crash images of a model that replays dropout, noise and a holdout ---------------------

IMAGE_BATCHES = 40
IMAGE_MODEL = model_body(
    "m", dropout=0.2,
    training={
        "batch_size": 16, "holdout": 0.2, "augment_noise": 0.1, "eval_every": 2,
        "promote": "latest", "patience": 1000, "rollback_tolerance": None,
    },
)  # fmt: skip


@dataclass(frozen=True)
class CrashImage:
    """A crash image after `IMAGE_BATCHES` batches, one a batch earlier, and the original's
    answers at the moment the first was taken."""

    settings: Settings  # the original's (an image's settings: `crash_image`)
    intact: Path
    before_last: Path
    batches: list[dict[str, Any]]
    model: dict[str, Any]
    versions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    head_sha256: str  # the original's head, checkpointed right after the image was taken


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> CrashImage:
    """Twenty batches that improve the model (versions, promotions, snapshots); then a change
    of `min_delta` that stops improvements, so the last twenty batches (rounds included) live
    only in the write-ahead log, after the last snapshot: the image must replay them."""
    root = tmp_path_factory.mktemp("crash-image")
    settings = Settings(
        data_dir=root / "data", database_url=f"sqlite:///{root / 'data' / 'gradual.db'}",
        device="cpu", torch_threads=1, snapshot_every=1000,
    )  # fmt: skip
    lines = numbered_batches(IMAGE_BATCHES, rows=8, seed=5)
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/models", json=IMAGE_MODEL).status_code == 201
        stream_fit(client, "m", lines[:20])
        patched = client.patch("/v1/models/m/training", json={"min_delta": 100.0})
        assert patched.status_code == 200, patched.text
        for line in lines[20:-1]:
            fit(client, "m", line)
        crash_image(settings, root / "before-last")
        fit(client, "m", lines[-1])
        crash_image(settings, root / "intact")
        taken = CrashImage(
            settings, root / "intact", root / "before-last", lines, model_state(client, "m"),
            versions(client), events(client, "m"), weights_sha256(client),
        )  # fmt: skip
    assert len(taken.versions) > 2, "the first twenty batches should have made versions"
    assert newest_segment(taken.intact).stat().st_size > 0, "the image should have a log to replay"
    return taken


def copied(image: CrashImage, source: Path, target: Path) -> Settings:
    """A fresh copy of `source` (one of the images) at `target`, so that no two tests share
    one, and the settings of an app on it."""
    return crash_image(image.settings.model_copy(update={"data_dir": source}), target)


def newest_segment(data_dir: Path) -> Path:
    segments = sorted((data_dir / "wal" / "m1").glob("*.wal"), key=lambda p: int(p.stem))
    return segments[-1]


def record_offsets(segment: Path) -> list[int]:
    """Where each record of a log segment starts (`b"GWAL" | u32 length | u32 crc | payload`)."""
    data, offsets, at = segment.read_bytes(), [], 0
    while at < len(data):
        magic, length, _ = struct.unpack_from("<4sII", data, at)
        assert magic == b"GWAL"
        offsets.append(at)
        at += 12 + length
    return offsets


def test_crash_image_restarts_with_the_head_weights_bit_for_bit(
    image: CrashImage, start: Start, tmp_path: Path
) -> None:
    copy = start(copied(image, image.intact, tmp_path / "copy"))
    assert weights_sha256(copy) == image.head_sha256


def test_crash_image_restarts_with_the_same_counters_pointers_and_state(
    image: CrashImage, start: Start, tmp_path: Path
) -> None:
    copy = start(copied(image, image.intact, tmp_path / "copy"))
    assert model_state(copy, "m") == image.model


def test_crash_image_replay_records_no_version_or_event_twice(
    image: CrashImage, start: Start, tmp_path: Path
) -> None:
    copy = start(copied(image, image.intact, tmp_path / "copy"))
    assert versions(copy) == image.versions
    assert events(copy, "m") == image.events
    assert any(e["kind"] == "round" for e in image.events[-5:]), "the log should hold rounds"


@pytest.mark.parametrize(
    "index", [0, 19, IMAGE_BATCHES - 1], ids=["first", "before-the-snapshot", "only-in-the-log"]
)
def test_crash_image_answers_an_applied_batch_id_as_a_duplicate(
    image: CrashImage, start: Start, tmp_path: Path, index: int
) -> None:
    copy = start(copied(image, image.intact, tmp_path / "copy"))
    answer = fit(copy, "m", image.batches[index])
    assert (answer["duplicate"], answer["step"]) == (True, image.model["step"])


def test_torn_last_log_record_is_cut_and_the_records_before_it_replay(
    image: CrashImage, start: Start, tmp_path: Path
) -> None:
    torn = copied(image, image.intact, tmp_path / "torn")
    segment = newest_segment(torn.data_dir)
    last = record_offsets(segment)[-1]
    os.truncate(segment, last + (segment.stat().st_size - last) // 2)
    reference = start(copied(image, image.before_last, tmp_path / "reference"))
    copy = start(torn)
    assert model_state(copy, "m") == model_state(reference, "m")
    assert weights_sha256(copy) == weights_sha256(reference)


def test_batch_of_a_torn_log_record_trains_when_retried(
    image: CrashImage, start: Start, tmp_path: Path
) -> None:
    """The torn batch was never acknowledged; its retry trains it, and the model ends where
    the original did when that batch's append had completed."""
    torn = copied(image, image.intact, tmp_path / "torn")
    segment = newest_segment(torn.data_dir)
    os.truncate(segment, segment.stat().st_size - 7)
    copy = start(torn)
    assert fit(copy, "m", image.batches[-1])["duplicate"] is False
    assert weights_sha256(copy) == image.head_sha256


def test_garbage_after_the_last_log_record_is_ignored(
    image: CrashImage, start: Start, tmp_path: Path
) -> None:
    damaged = copied(image, image.intact, tmp_path / "damaged")
    with open(newest_segment(damaged.data_dir), "ab") as segment:
        segment.write(b"GWAL\xff\xff\x00\x00 half a header and no payload")
    copy = start(damaged)
    assert model_state(copy, "m")["step"] == image.model["step"]
    assert weights_sha256(copy) == image.head_sha256


# -- durability=checkpoint: no log, and a crash loses the batches since the last snapshot --

CHECKPOINT_BATCHES = 25  # snapshots after records 10 and 20; 21 to 25 are only in memory


@pytest.fixture
def checkpointed(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(durability="checkpoint", snapshot_every=10, torch_threads=1)


def stream_checkpointed(start: Start, settings: Settings) -> TestClient:
    client = start(settings)
    assert client.post("/v1/models", json=model_body("m")).status_code == 201
    for line in numbered_batches(CHECKPOINT_BATCHES, rows=8, seed=6):
        fit(client, "m", line)
    return client


def test_checkpoint_mode_writes_no_log(start: Start, checkpointed: Settings) -> None:
    stream_checkpointed(start, checkpointed)
    wal = checkpointed.wal_dir
    assert not wal.exists() or not [p for p in wal.rglob("*") if p.is_file()]


def test_checkpoint_mode_crash_restarts_from_the_last_snapshot(
    start: Start, checkpointed: Settings, tmp_path: Path
) -> None:
    stream_checkpointed(start, checkpointed)
    copy = start(crash_image(checkpointed, tmp_path / "image"))
    state = model_state(copy, "m")
    assert (state["step"], state["samples_seen"]) == (20, 160)


def test_checkpoint_mode_crash_forgets_the_batch_ids_after_the_last_snapshot(
    start: Start, checkpointed: Settings, tmp_path: Path
) -> None:
    stream_checkpointed(start, checkpointed)
    copy = start(crash_image(checkpointed, tmp_path / "image"))
    lines = numbered_batches(CHECKPOINT_BATCHES, rows=8, seed=6)
    assert fit(copy, "m", lines[19])["duplicate"] is True
    assert fit(copy, "m", lines[20])["duplicate"] is False


def test_checkpoint_mode_graceful_restart_keeps_every_batch(
    start: Start, checkpointed: Settings
) -> None:
    client = stream_checkpointed(start, checkpointed)
    client.__exit__(None, None, None)
    assert model_state(start(checkpointed), "m")["step"] == CHECKPOINT_BATCHES


# -- real servers, SIGKILLed at each named crash point -------------------------------------

CRASHPOINTS = [  # rare points first, so every one is reached before the stream ends
    "mid_step", "after_db_commit", "after_snapshot", "after_weights_fsync", "after_rename",
    "after_wal_append",
]  # fmt: skip
KILLED_BATCHES = 60
KILLED_MODEL = model_body(
    "m", dropout=0.1, optimizer={"name": "adam", "lr": 0.01},
    training={
        "batch_size": 16, "holdout": 0.0, "augment_noise": 0.05, "eval_every": 3,
        "promote": "latest", "patience": 1000, "rollback_tolerance": None, "keep_versions": 1000,
    },
)  # fmt: skip


class Server:
    """`python -m service serve` on one data directory, one process at a time."""

    def __init__(self, data: Path, log: Path, settings: dict[str, str] | None = None) -> None:
        self.data = data
        self.log = log
        self.settings = settings or {}  # GRADUAL_* beyond the test's own
        self.process: subprocess.Popen[bytes] | None = None
        # No keep-alive: a request never meets a connection the server closed while idle, so
        # a transport error always means the server died.
        self.http = httpx.Client(timeout=60, limits=httpx.Limits(max_keepalive_connections=0))

    def start(self, crashpoint: str | None) -> bool:
        """True once it answers ready; False if a crash point killed it first (in replay).
        A start that fails otherwise (its free port taken meanwhile) is tried again."""
        for _ in range(3):
            self._spawn(crashpoint)
            if self._ready():
                return True
            if self.death() == -signal.SIGKILL:
                return False
        raise AssertionError(f"the server would not start:\n{self.log.read_text()[-3000:]}")

    def _spawn(self, crashpoint: str | None) -> None:
        port = free_port()
        settings = {"GRADUAL_DATA_DIR": str(self.data), **self.settings}
        if crashpoint is not None:
            settings["GRADUAL_CRASHPOINT"] = crashpoint
        self.process = serve_process(port, settings, self.log)
        self.http.base_url = httpx.URL(f"http://127.0.0.1:{port}")

    def _ready(self) -> bool:
        assert self.process is not None
        return answers_ready(self.process, self.http, self.log)

    def death(self) -> int:
        """Its return code once it has died (a killed server must not linger)."""
        assert self.process is not None
        return self.process.wait(timeout=60)

    def stop(self) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=60)


@dataclass
class Run:
    """One stream of the same batches through servers armed, in turn, with `schedule`."""

    server: Server
    schedule: list[str]
    deaths: list[tuple[str | None, int]] = field(default_factory=list)
    retried: list[dict[str, Any]] = field(default_factory=list)  # answers after a death
    armed: str | None = None

    def start_next(self) -> None:
        while True:
            self.armed = self.schedule.pop(0) if self.schedule else None
            if self.server.start(self.armed):
                return
            self.deaths.append((self.armed, self.server.death()))

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.server.http.post(path, json=body)

    def get(self, path: str) -> Any:
        response = self.server.http.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def send(self, line: dict[str, Any]) -> None:
        """Posts a batch until acknowledged, restarting the server after each death."""
        died = False
        while True:
            try:
                response = self.post("/v1/models/m/partial-fit", line)
            except httpx.TransportError:
                self.deaths.append((self.armed, self.server.death()))
                self.start_next()
                died = True
                continue
            assert response.status_code == 200, response.text
            if died:
                self.retried.append(response.json())
            return


@dataclass(frozen=True)
class Outcome:
    deaths: list[tuple[str | None, int]]
    retried: list[dict[str, Any]]
    head_sha256: str
    model: dict[str, Any]
    versions: list[dict[str, Any]]
    events: list[dict[str, Any]]
    resent: dict[str, Any]  # the summary of every batch streamed again at the end
    data: Path


def run_stream(directory: Path, plan: Schedule) -> Outcome:
    """Creates the model, adds validation rows, streams the batches; then checkpoints the head
    and streams every batch again (all must be duplicates)."""
    directory.mkdir()
    server = Server(directory / "data", directory / "server.log", plan.settings)
    run = Run(server, list(plan.points))
    run.start_next()
    try:
        assert run.post("/v1/models", KILLED_MODEL).status_code == 201
        assert run.post("/v1/models/m/validation", batch(*blobs(200, seed=7))).status_code == 200
        lines = numbered_batches(KILLED_BATCHES, rows=16, seed=3)
        for line in lines:
            run.send(line)
        assert run.armed is None, f"never reached: {[run.armed, *run.schedule]}"
        head = run.post("/v1/models/m/versions")
        assert head.status_code == 201, head.text
        resent = run.server.http.post(
            "/v1/models/m/partial-fit", content=ndjson(lines),
            headers={"content-type": "application/x-ndjson"},
        )  # fmt: skip
        assert resent.status_code == 200, resent.text
        return Outcome(
            deaths=run.deaths, retried=run.retried, head_sha256=head.json()["weights_sha256"],
            model=run.get("/v1/models/m"), versions=run.get("/v1/models/m/versions")["versions"],
            events=run.get("/v1/models/m/events")["events"],
            resent=json.loads(resent.text.splitlines()[-1])["summary"], data=directory / "data",
        )  # fmt: skip
    finally:
        run.server.stop()


@dataclass(frozen=True)
class Killed:
    reference: Outcome  # a crash-free run
    crashed: list[Outcome]  # one per schedule of `SCHEDULES`


@dataclass(frozen=True)
class Schedule:
    points: list[str]  # crash points armed in turn, each `name:n` (its n-th hit after a start)
    settings: dict[str, str]


# A snapshot after every version (interval 0) reaches `after_snapshot` mid-stream; with the
# default interval a crash replays the log across versions that committed after the snapshot.
EVERY_VERSION = {"GRADUAL_SNAPSHOT_INTERVAL_S": "0"}
SCHEDULES = [
    *(Schedule([f"{point}:{n}" for point in CRASHPOINTS], EVERY_VERSION) for n in (1, 2)),
    Schedule([f"{point}:1" for point in CRASHPOINTS if point != "after_snapshot"], {}),
]


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Killed:
    """The same stream three times at once: crash-free, and twice with every crash point
    armed in turn (the first and then the second time each is reached after a start)."""
    root = tmp_path_factory.mktemp("killed")
    plans = [
        ("reference", Schedule([], {})),
        *((f"crashed-{i}", s) for i, s in enumerate(SCHEDULES, 1)),
    ]
    with ThreadPoolExecutor(len(plans)) as pool:
        futures = [pool.submit(run_stream, root / name, plan) for name, plan in plans]
        outcomes = [future.result() for future in futures]
    return Killed(outcomes[0], outcomes[1:])


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without what the clock and the database's id allocation decide."""
    return [{k: v for k, v in row.items() if k not in {"created_at", "id"}} for row in rows]


@pytest.mark.slow
def test_every_crash_point_killed_a_server_twice(killed: Killed) -> None:
    for outcome, schedule in zip(killed.crashed, SCHEDULES, strict=True):
        assert outcome.deaths == [(point, -signal.SIGKILL) for point in schedule.points]
    assert killed.reference.deaths == []


# Points a version's write reaches: written behind the answer, they may fire while the next
# request is not logged yet (its retry then trains it, once).
BEHIND_THE_ANSWER = {"after_db_commit", "after_weights_fsync", "after_rename"}


@pytest.mark.slow
def test_batch_retried_after_a_kill_is_acknowledged_as_a_duplicate(killed: Killed) -> None:
    """A crash point on the request's own path lies after the batch's log append: the retry
    must not train again. Only a death at a point of the history written behind an earlier
    answer may meet a request not yet logged."""
    for outcome in killed.crashed:
        assert any(answer["duplicate"] for answer in outcome.retried)
        fresh = sum(not answer["duplicate"] for answer in outcome.retried)
        behind = sum(point.split(":")[0] in BEHIND_THE_ANSWER for point, _ in outcome.deaths)
        assert fresh <= behind


@pytest.mark.slow
def test_killed_runs_end_with_the_weights_of_a_crash_free_run(killed: Killed) -> None:
    for outcome in killed.crashed:
        assert outcome.head_sha256 == killed.reference.head_sha256


@pytest.mark.slow
def test_killed_runs_end_with_the_counters_and_pointers_of_a_crash_free_run(
    killed: Killed,
) -> None:
    expected = {k: v for k, v in killed.reference.model.items() if k != "created_at"}
    for outcome in killed.crashed:
        assert {k: v for k, v in outcome.model.items() if k != "created_at"} == expected


@pytest.mark.slow
def test_killed_runs_record_each_version_and_event_exactly_once(killed: Killed) -> None:
    for outcome in killed.crashed:
        assert comparable(outcome.versions) == comparable(killed.reference.versions)
        assert comparable(outcome.events) == comparable(killed.reference.events)


@pytest.mark.slow
def test_killed_runs_train_no_batch_again_when_all_are_resent(killed: Killed) -> None:
    for outcome in (killed.reference, *killed.crashed):
        assert (outcome.resent["duplicates"], outcome.resent["trained"]) == (KILLED_BATCHES, 0)


@pytest.mark.slow
def test_every_version_row_of_a_killed_run_points_at_its_weights(killed: Killed) -> None:
    for outcome in killed.crashed:
        url = f"file:{outcome.data / 'gradual.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(url, uri=True)) as database:
            rows = database.execute(
                "SELECT number, status, weights_path, weights_sha256 FROM versions"
            ).fetchall()
        assert len(rows) == len(killed.reference.versions)
        for number, status, path, sha256 in rows:
            weights = outcome.data / "weights" / path
            assert status == "ready", number
            assert weights.is_file(), f"version {number}: {path} is missing"
            assert hashlib.sha256(weights.read_bytes()).hexdigest() == sha256, number
