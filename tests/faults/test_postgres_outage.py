"""PostgreSQL stopped for a few seconds in the middle of a stream, and started again.

A real server (embedded log, PostgreSQL for versions and events) takes a steady stream of
batches while the database is down: every request is answered, and the model counts exactly
the rows it acknowledged (the write-ahead log carries the batches; the database writes of their
rounds wait for it, up to GRADUAL_DATABASE_WAIT_S). The outage is kept short because other
tests share the server; it is always ended in a `finally`, and the test waits for
`pg_isready` afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.test_durability import Server
from tests.conftest import POSTGRES_URL, unavailable
from tests.factories import batch, blobs, model_body, ndjson, numbered_batches

OUTAGE_S = 3.0
BATCH_ROWS = 32
BATCHES = 120
MODEL = model_body(
    "m", training={
        "batch_size": 32, "holdout": 0.0, "eval_every": 2, "promote": "latest",
        "patience": 10_000, "rollback_tolerance": None, "keep_versions": 3,
    },
)  # fmt: skip


def _cluster() -> list[str]:
    """The local cluster's `pg_ctlcluster` arguments, or a skip with the reason."""
    if "@127.0.0.1" not in POSTGRES_URL and "@localhost" not in POSTGRES_URL:
        unavailable("a local PostgreSQL cluster", "GRADUAL_TEST_POSTGRES_URL is not local")
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if shutil.which("pg_ctlcluster") is None or not versions:
        unavailable("a local PostgreSQL cluster", "no pg_ctlcluster or /etc/postgresql")
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main"]


def _ctl(cluster: list[str], *action: str) -> None:
    subprocess.run([*cluster, *action], check=True, capture_output=True, timeout=60)


def _wait_ready(timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"], check=False).returncode:
        assert time.monotonic() < deadline, "PostgreSQL did not come back"
        time.sleep(0.2)


class Outage(threading.Thread):
    """Stops the cluster, waits `OUTAGE_S`, starts it again (always), then waits until ready."""

    def __init__(self, cluster: list[str]) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            _ctl(self.cluster, "stop", "-m", "fast")  # (smart mode waits for every client)
            self.stopped.set()
            time.sleep(OUTAGE_S)
        except BaseException as exc:
            self.error = exc
        finally:
            self.stopped.set()
            _ctl(self.cluster, "start")
            _wait_ready()


@dataclass
class Outcome:
    statuses: Counter[int] = field(default_factory=Counter)
    resets: int = 0
    acknowledged: set[str] = field(default_factory=set)
    during_outage: int = 0  # requests sent while the database was down
    samples_seen: int = 0
    resent: dict[str, Any] = field(default_factory=dict)


def stream(server: Server, lines: list[dict[str, Any]], outage: Outage) -> Outcome:
    outcome = Outcome()
    for index, line in enumerate(lines):
        if index == len(lines) // 3:
            outage.start()
            outage.stopped.wait(60)
        outcome.during_outage += outage.is_alive()  # sent while the database was down
        try:
            response = server.http.post("/v1/models/m/partial-fit", json=line)
        except httpx.TransportError:
            outcome.resets += 1
            continue
        outcome.statuses[response.status_code] += 1
        if response.status_code == 200:
            outcome.acknowledged.add(line["batch_id"])
    outage.join(120)
    return outcome


@pytest.fixture(scope="module")
def outage_run(tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    cluster = _cluster()
    _wait_ready(10)
    tmp_path = tmp_path_factory.mktemp("postgres-outage")
    schema = f"gradual_outage_{uuid.uuid4().hex[:12]}"
    admin = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    server = Server(tmp_path / "data", tmp_path / "server.log", {"GRADUAL_DATABASE_URL": url})
    outage = Outage(cluster)
    try:
        assert server.start(None)
        assert server.http.post("/v1/models", json=MODEL).status_code == 201
        validation = batch(*blobs(200, seed=7))
        assert server.http.post("/v1/models/m/validation", json=validation).status_code == 200
        lines = numbered_batches(BATCHES, rows=BATCH_ROWS, seed=3)
        outcome = stream(server, lines, outage)
        outcome.samples_seen = server.http.get("/v1/models/m").json()["samples_seen"]
        resent = server.http.post(
            "/v1/models/m/partial-fit", content=ndjson(lines),
            headers={"content-type": "application/x-ndjson"},
        )  # fmt: skip
        outcome.resent = json.loads(resent.text.splitlines()[-1])["summary"]
    finally:
        if outage.ident is not None:  # started: it always starts the cluster again
            outage.join(120)
        _wait_ready()
        server.stop()
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    assert outage.error is None, outage.error
    return outcome


@pytest.mark.postgres
def test_every_request_is_answered_through_a_postgres_outage(outage_run: Outcome) -> None:
    assert outage_run.resets == 0
    assert outage_run.during_outage > 0
    assert outage_run.statuses == Counter({200: BATCHES})


@pytest.mark.postgres
def test_a_postgres_outage_loses_and_repeats_no_acknowledged_batch(outage_run: Outcome) -> None:
    assert outage_run.samples_seen == len(outage_run.acknowledged) * BATCH_ROWS
    assert (outage_run.resent["duplicates"], outage_run.resent["trained"]) == (
        len(outage_run.acknowledged), 0,
    )  # fmt: skip
