"""Real `python -m service serve` processes sharing PostgreSQL, Redis and a weight store; the
clients' ledger of acknowledged batches, and the cluster's view of who trains what."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import psycopg
import redis

from tests.conftest import POSTGRES_URL, REDIS_URL, unavailable
from tests.factories import labelled
from tests.live_server import answers_ready, free_port, serve_process


class Replica:
    """One `gradual serve`: on a free port of loopback, or on `host`:`port` (another
    network namespace's, entered by `launcher`); `token` goes with every request."""

    def __init__(
        self, name: str, env: dict[str, str], log: Path, *, host: str = "127.0.0.1",
        port: int | None = None, launcher: Sequence[str] = (), token: str | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.env = env
        self.log = log
        self.host, self.port, self.launcher = host, port or free_port(), launcher
        self.process: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=f"http://{host}:{self.port}", timeout=60,
            limits=httpx.Limits(max_keepalive_connections=0),
            headers={"authorization": f"Bearer {token}"} if token else None,
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
        bind = None if self.host == "127.0.0.1" else self.host  # the default bind
        self.process = serve_process(
            self.port, settings, self.log, host=bind, launcher=self.launcher
        )

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


class Poster(Protocol):
    """Anything batches can be posted to: a replica, or the balancer in front of them."""

    def post(self, path: str, body: Any = None) -> httpx.Response: ...


@dataclass
class Ledger:
    """Rows of the batches each model acknowledged, kept by the clients. A batch counts once,
    however many times it was resent: a resend whose first try was made durable before the
    answer was lost is acknowledged as a duplicate, and still applied once."""

    batch_rows: int = 4
    rows: Counter[str] = field(default_factory=Counter)
    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, to: Poster, model: str, batch_id: str, seed: int, wait: bool) -> None:
        body = labelled(self.batch_rows, seed=seed) | {"batch_id": batch_id}
        path = f"/v1/models/{model}/partial-fit{'' if wait else '?wait=false'}"
        deadline = time.monotonic() + 60
        while True:  # a client resends until acknowledged: the batch id makes that safe
            try:
                if to.post(path, body).status_code in (200, 202):  # applied, or durable
                    break
            except Exception:  # a replica going away mid-request: resend
                pass
            assert time.monotonic() < deadline, f"{model} {batch_id} never acknowledged"
            time.sleep(0.05)
        with self.lock:
            if (model, batch_id) not in self.acknowledged:
                self.acknowledged.add((model, batch_id))
                self.rows[model] += self.batch_rows


@dataclass
class Cluster:
    """The replicas started for `models`, and what each says it trains (`/readyz`)."""

    replicas: dict[str, Replica]
    models: list[str]
    ledger: Ledger = field(default_factory=Ledger)
    last: dict[str, list[str]] = field(default_factory=dict)  # as `balanced` last saw it

    def running(self) -> list[Replica]:
        return [r for r in self.replicas.values() if r.process and r.process.poll() is None]

    def owned(self) -> dict[str, list[str]]:
        return {r.name: r.owned() for r in self.running()}

    def balanced(self, share: int) -> bool:
        owned = self.last = self.owned()
        counts = [len(models) for models in owned.values()]
        every = sorted(m for models in owned.values() for m in models)
        return every == self.models and all(abs(c - share) <= 1 for c in counts)

    def every_owned(self) -> list[str]:
        return sorted(m for models in self.owned().values() for m in models)

    def owner(self, model: str) -> Replica:
        for replica in self.running():
            if model in replica.owned():
                return replica
        raise AssertionError(f"{model} has no owner")

    def samples(self) -> dict[str, int]:
        """Each model's `samples_seen` on its owner, once every model has one."""
        wait_until(lambda: self.every_owned() == self.models, timeout=20)
        return {m: self.owner(m).get(f"/v1/models/{m}")["samples_seen"] for m in self.models}

    def expected(self) -> dict[str, int]:
        return {m: self.ledger.rows[m] for m in self.models}


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
