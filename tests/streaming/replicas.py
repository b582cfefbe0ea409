"""Real `python -m service serve` processes sharing PostgreSQL, Redis and a data directory."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis

from tests.conftest import POSTGRES_URL, REDIS_URL, unavailable
from tests.live_server import answers_ready, free_port, serve_process


class Replica:
    def __init__(self, name: str, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.env = env
        self.log = log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", timeout=60,
            limits=httpx.Limits(max_keepalive_connections=0),
        )  # fmt: skip

    def start(self) -> Replica:
        assert self.try_start(), f"{self.name} died while starting; see {self.log}"
        return self

    def try_start(self) -> bool:
        """True once it answers ready; False if it died first (a crash point in catch-up)."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        settings = self.env | {"GRADUAL_REPLICA_ID": self.name}
        self.process = serve_process(self.port, settings, self.log)

    def wait_ready(self) -> bool:
        assert self.process is not None
        return answers_ready(self.process, self.http, self.log)

    def owned(self) -> list[str]:
        found: list[str] = self.http.get("/readyz").json()["detail"].get("owned", [])
        return found

    def get(self, path: str) -> Any:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def kill_quietly(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    def wait_dead(self) -> None:
        assert self.process is not None
        self.process.wait(timeout=60)

    def stop(self) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_until(condition: Any, timeout: float = 30.0, step: float = 0.02) -> float:
    """Seconds until `condition()` held (fails after `timeout`)."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, "condition not met in time"
        time.sleep(step)
    return time.monotonic() - began


@contextmanager
def cluster_database(name: str) -> Iterator[dict[str, str]]:
    """A PostgreSQL schema of its own and a Redis key prefix of its own, for replicas started
    by one test module: the settings naming them. Both are dropped afterwards (through a fresh
    connection: the server may have restarted meanwhile)."""
    admin_url = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as admin:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
            schema = f"gradual_{name}_{uuid.uuid4().hex[:10]}"
            admin.execute(f'CREATE SCHEMA "{schema}"')
    except (psycopg.OperationalError, redis.RedisError) as exc:
        unavailable("PostgreSQL or Redis", str(exc).strip().splitlines()[0])
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield {
            "GRADUAL_DATABASE_URL": f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}",
            "GRADUAL_REDIS_URL": REDIS_URL, "GRADUAL_REDIS_PREFIX": prefix,
        }  # fmt: skip
    finally:
        with psycopg.connect(admin_url, autocommit=True) as again:
            again.execute(f'DROP SCHEMA "{schema}" CASCADE')
        client = redis.Redis.from_url(REDIS_URL)
        stale = list(client.scan_iter(f"{prefix}:*"))
        if stale:
            client.delete(*stale)
