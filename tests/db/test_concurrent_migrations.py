"""Replicas that start at the same moment on an empty PostgreSQL database all come up.

Each start runs the migrations; without the advisory lock two of them create the same
tables at once and one dies on `UniqueViolation`. Real processes, released together.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import POSTGRES_URL, unavailable
from tests.live_server import ROOT
from tests.streaming.replicas import Replica

pytestmark = [pytest.mark.postgres]

ROUNDS, REPLICAS = 10, 3
# Imports first, then waits on stdin: the three migrations then begin within a millisecond.
MIGRATE = """
import sys
from service.storage.db import migrate
print("ready", flush=True)
sys.stdin.readline()
migrate.upgrade(sys.argv[1])
"""


@pytest.fixture
def admin() -> Iterator[psycopg.Connection]:
    try:
        connection = psycopg.connect(
            POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True,
            connect_timeout=3,
        )  # fmt: skip
    except psycopg.OperationalError as exc:
        unavailable("PostgreSQL", str(exc).strip().splitlines()[0])
    with connection:
        yield connection


def fresh_schema(admin: psycopg.Connection, made: list[str]) -> str:
    schema = f"gradual_race_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE SCHEMA "{schema}"')
    made.append(schema)
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


def migrate_together(url: str) -> list[tuple[int, str]]:
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    command = [sys.executable, "-c", MIGRATE, url]
    processes = [subprocess.Popen(command, cwd=ROOT, **pipes) for _ in range(REPLICAS)]
    for process in processes:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(b"go\n")
        process.stdin.flush()
    return [(p.wait(timeout=60), p.communicate()[0].decode()[-2000:]) for p in processes]


def heads(admin: psycopg.Connection, schema: str) -> list[str]:
    rows = admin.execute(f'SELECT version_num FROM "{schema}".alembic_version').fetchall()
    return [row[0] for row in rows]


def test_migrations_started_together_all_succeed_ten_times(admin: psycopg.Connection) -> None:
    made: list[str] = []
    try:
        for _ in range(ROUNDS):
            url = fresh_schema(admin, made)
            outcomes = migrate_together(url)
            assert [rc for rc, _ in outcomes] == [0] * REPLICAS, outcomes
            assert len(heads(admin, made[-1])) == 1
    finally:
        for schema in made:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_three_replicas_started_together_on_an_empty_database_all_come_up(
    admin: psycopg.Connection, tmp_path: Path
) -> None:
    made: list[str] = []
    url = fresh_schema(admin, made)
    replicas = [
        Replica(f"r{i}", {"GRADUAL_DATABASE_URL": url, "GRADUAL_DATA_DIR": str(tmp_path / f"d{i}")},
                tmp_path / f"r{i}.log")
        for i in range(REPLICAS)
    ]  # fmt: skip
    try:
        for replica in replicas:  # all three processes run before any is ready
            replica.launch()
        assert [r.wait_ready() for r in replicas] == [True] * REPLICAS
        assert all(r.get("/v1/models") == {"models": []} for r in replicas)
    finally:
        for replica in replicas:
            replica.stop()
        admin.execute(f'DROP SCHEMA "{made[0]}" CASCADE')
