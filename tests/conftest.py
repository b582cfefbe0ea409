"""Fixtures: a fresh app per test on a real SQLite file, or a real PostgreSQL schema.

Tests that need PostgreSQL or Redis read their URLs from the environment and skip with a
reason when the server is unreachable; with GRADUAL_TEST_REQUIRE_SERVICES=1 (set by .ci/run)
such a skip becomes a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from tests.stores import s3_endpoint, store_kind, store_settings, weight_store

# fixtures of tests/stores.py
__all__ = ["s3_endpoint", "store_kind", "store_settings", "weight_store"]

POSTGRES_URL = os.environ.get(
    "GRADUAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("GRADUAL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_SERVICES = os.environ.get("GRADUAL_TEST_REQUIRE_SERVICES") == "1"


def unavailable(service: str, reason: str) -> NoReturn:
    cannot_run(f"{service} unreachable ({reason}); set its URL in the environment to run this test")


def cannot_run(message: str) -> NoReturn:
    """Skips the test with `message`, or fails it when GRADUAL_TEST_REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"GRADUAL_TEST_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema on the PostgreSQL server, dropped afterwards."""
    schema = f"gradual_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(_libpq(POSTGRES_URL), autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable("PostgreSQL", str(exc).strip().splitlines()[0])
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        separator = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The Redis server's URL; the test's keys go under its own `redis_prefix` (see below)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis", str(exc))
    yield REDIS_URL
    client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of the test's own (or to build its own from); its keys go afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    stale = list(client.scan_iter(f"{prefix}*"))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture(params=["sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The database URL; parametrize indirectly with ["sqlite", "postgres"] to cover both."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'data' / 'gradual.db'}"


@pytest.fixture
def make_settings(
    tmp_path: Path, database: str, store_settings: dict[str, object]
) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path / "data",
            "database_url": database,
            "device": "cpu",
        }
        values.update(store_settings)
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def start(settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """Starts the app (lifespan included) on `settings`; call again to restart on the same data."""
    clients: list[TestClient] = []

    def run(custom: Settings | None = None) -> TestClient:
        client = TestClient(create_app(custom or settings))
        client.__enter__()
        clients.append(client)
        return client

    yield run
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(start: Callable[..., TestClient]) -> TestClient:
    return start()
