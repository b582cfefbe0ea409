"""scripts/local-stack end to end: the compose topology as real processes (PostgreSQL, a
password-protected Redis, the migration, two `gradual serve` replicas, nginx with
docker/nginx.conf), driven over HTTP, then stopped with nothing left running."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import redis
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from service.storage.db.migrate import alembic_config
from tests.conftest import POSTGRES_URL, unavailable
from tests.deploy.stackfiles import ENV_EXAMPLE, ROOT, env_file
from tests.factories import batches, digits_split
from tests.live_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
SCRIPT = ROOT / "scripts" / "local_stack.py"
TOKEN = "e2e-" + secrets.token_hex(8)
# The test server's superuser connection: local-stack makes its role and database through it.
ADMIN_URL = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://")


@dataclass
class RunningStack:
    run_dir: Path
    info: dict[str, Any]
    database_url: str

    @property
    def balancer(self) -> str:
        return str(self.info["balancer_url"])

    def url(self, name: str) -> str:
        (component,) = [c for c in self.info["components"] if c["name"] == name]
        return str(component["url"])

    def pids(self) -> list[int]:
        return [c["pid"] for c in self.info["components"]]

    def upstreams(self) -> list[str]:
        """The replica nginx sent each request to, in order (its access log)."""
        log = (self.run_dir / "logs" / "balancer.log").read_text()
        return re.findall(r"upstream=(\S+)", log)


def _run(run_dir: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--run-dir", str(run_dir), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def _logs(run_dir: Path) -> str:
    logs = sorted((run_dir / "logs").glob("*.log"))
    return "\n".join(f"== {p.name}\n{p.read_text()[-2000:]}" for p in logs)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _require_tools() -> None:
    for tool in ("redis-server", "nginx"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            unavailable(tool, "not installed (apt-get install redis-server nginx-light)")
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        unavailable("PostgreSQL", str(exc).strip().splitlines()[0])


def _env(path: Path, suffix: str) -> Path:
    values = env_file(ENV_EXAMPLE) | {
        "POSTGRES_USER": f"gradual_e2e_{suffix}",
        "POSTGRES_DB": f"gradual_e2e_{suffix}",
        "POSTGRES_PASSWORD": secrets.token_hex(12),
        "REDIS_PASSWORD": secrets.token_hex(12),
        "GRADUAL_API_TOKENS": f"admin={TOKEN}",
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    _require_tools()
    home = tmp_path_factory.mktemp("local-stack")
    run_dir, suffix = home / "run", secrets.token_hex(4)
    env = _env(home / "stack.env", suffix)
    started = _run(
        run_dir, "up", "--env-file", str(env), "--postgres-admin", ADMIN_URL,
        "--publish-port", str(free_port()),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr + _logs(run_dir)
    info = json.loads((run_dir / "stack.json").read_text())
    running = RunningStack(run_dir, info, info["database_url"])
    try:
        yield running
    finally:
        stopped = _run(run_dir, "down", "--purge", timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert [pid for pid in running.pids() if _alive(pid)] == []
        assert not run_dir.exists()


def _client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)


def _digits_model(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "spec": {"task": "classification", "inputs": 64, "outputs": 10, "hidden": [32]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"batch_size": 32, "eval_every": 5, "holdout": 0.15, "patience": 50},
        "seed": 0,
    }


def _query(stack: RunningStack, statement: str, **params: object) -> list[tuple[Any, ...]]:
    """A query on the stack's database through SQLAlchemy, as the replicas reach it."""
    engine = create_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(statement), params)]
    finally:
        engine.dispose()


def _versions_in_postgres(stack: RunningStack, model: str) -> list[int]:
    rows = _query(
        stack,
        "SELECT v.number FROM versions v JOIN models m ON m.id = v.model_id "
        "WHERE m.name = :name ORDER BY v.number",
        name=model,
    )
    return [number for (number,) in rows]


def _owner(stack: RunningStack, model: str) -> str:
    """The replica holding the model's lease: the one that trains it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for name in ("api-1", "api-2"):
            with _client(stack.url(name)) as client:
                if model in client.get("/readyz").json()["detail"].get("owned", []):
                    return name
        time.sleep(0.1)
    raise AssertionError(f"no replica owns {model}")


def _accuracy(client: httpx.Client, model: str, x: np.ndarray, y: np.ndarray) -> float:
    response = client.post(f"/v1/models/{model}/predict", json={"inputs": x.tolist()})
    assert response.status_code == 200, response.text
    return float(np.mean(np.asarray(response.json()["predictions"]) == y))


# -- what the stack is ------------------------------------------------------------------------


def test_stack_runs_the_compose_topology(stack: RunningStack) -> None:
    names = [c["name"] for c in stack.info["components"]]
    assert names == ["redis", "api-1", "api-2", "balancer"]
    status = _run(stack.run_dir, "status", timeout=30)
    assert status.returncode == 0, status.stdout
    assert status.stdout.count(" ready ") == 3
    (revision,) = _query(stack, "SELECT version_num FROM alembic_version")
    head = ScriptDirectory.from_config(alembic_config(stack.database_url)).get_current_head()
    assert revision == (head,)


def test_redis_is_locked_down_like_the_compose_service(stack: RunningStack) -> None:
    url = stack.info["redis_url"]
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url.replace(url.split("@")[0], "redis://")).ping()
    client = redis.Redis.from_url(url)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    finally:
        client.close()


def test_balancer_spreads_requests_over_both_replicas(stack: RunningStack) -> None:
    before = len(stack.upstreams())
    with _client(stack.balancer) as client:
        for _ in range(6):
            assert client.get("/readyz").json()["status"] == "ready"
    used = stack.upstreams()[before:]
    replicas = {stack.url(name).removeprefix("http://") for name in ("api-1", "api-2")}
    assert len(used) == 6
    assert set(used) == replicas


# -- a model learning through it ---------------------------------------------------------------


def test_model_created_through_the_balancer_learns_and_checkpoints_to_postgres(
    stack: RunningStack,
) -> None:
    x_train, x_test, y_train, y_test = digits_split()
    with _client(stack.balancer) as client:
        created = client.post("/v1/models", json=_digits_model("digits"))
    assert created.status_code == 201, created.text
    assert _versions_in_postgres(stack, "digits") == [1]
    with _client(stack.url(_owner(stack, "digits"))) as owner:
        trained = 0
        for index, body in enumerate(batches(x_train, y_train, 64)):
            answer = owner.post("/v1/models/digits/partial-fit", json={**body, "batch_id": index})
            assert answer.status_code == 200, answer.text
            trained += answer.json()["trained"]
        model = owner.get("/v1/models/digits").json()
        accuracy = _accuracy(owner, "digits", x_test, y_test)
    assert model["samples_seen"] == trained
    assert 0.75 * len(x_train) < trained < len(x_train)  # the rest is held out for validation
    versions = _versions_in_postgres(stack, "digits")
    assert len(versions) > 1
    assert model["served_version"] in versions
    assert accuracy > 0.8


def test_any_replica_takes_batches_and_both_serve_the_same_version(stack: RunningStack) -> None:
    x_train, x_test, y_train, y_test = digits_split(seed=1)
    with _client(stack.balancer) as client:
        assert client.post("/v1/models", json=_digits_model("shared")).status_code == 201
        sent = batches(x_train, y_train, 64)
        for index, body in enumerate(sent):  # round-robin: half land on the non-owner
            answer = client.post("/v1/models/shared/partial-fit", json={**body, "batch_id": index})
            assert answer.status_code in (200, 202), answer.text
        for index, body in enumerate(sent):  # every batch was applied: a resend is a duplicate
            again = client.post("/v1/models/shared/partial-fit", json={**body, "batch_id": index})
            assert again.json().get("duplicate") is True, again.text
    models, predictions = [], []
    for name in ("api-1", "api-2"):
        with _client(stack.url(name)) as replica:
            models.append(replica.get("/v1/models/shared").json())
            answer = replica.post("/v1/models/shared/predict", json={"inputs": x_test.tolist()})
            predictions.append(answer.json())
    assert models[0]["samples_seen"] == models[1]["samples_seen"] > 0.75 * len(x_train)
    assert predictions[0]["version"] == predictions[1]["version"] == models[0]["served_version"]
    assert predictions[0]["predictions"] == predictions[1]["predictions"]
    assert np.mean(np.asarray(predictions[0]["predictions"]) == y_test) > 0.8
    assert models[0]["served_version"] in _versions_in_postgres(stack, "shared")


# -- failures ------------------------------------------------------------------------------


def test_up_refuses_an_env_file_without_the_secrets(tmp_path: Path) -> None:
    env = tmp_path / "stack.env"
    env.write_text(ENV_EXAMPLE.read_text())  # the example as committed: secrets empty
    result = _run(tmp_path / "run", "up", "--env-file", str(env), timeout=60)
    assert result.returncode == 2
    assert "set POSTGRES_PASSWORD, REDIS_PASSWORD in" in result.stderr
    assert not (tmp_path / "run").exists()


def test_up_that_fails_stops_what_it_started_and_names_the_log(tmp_path: Path) -> None:
    _require_tools()
    suffix = secrets.token_hex(4)
    env = _env(tmp_path / "stack.env", suffix)
    env.write_text(env.read_text() + "GRADUAL_LOG_LEVEL=loud\n")  # migrate refuses the setting
    run_dir = tmp_path / "run"
    try:
        result = _run(
            run_dir, "up", "--env-file", str(env), "--postgres-admin", ADMIN_URL,
            "--publish-port", str(free_port()),
        )  # fmt: skip
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS gradual_e2e_{suffix}")
            connection.execute(f"DROP ROLE IF EXISTS gradual_e2e_{suffix}")
    assert result.returncode == 2
    # a bad setting is a usage error: exit status 2 (gradual --help lists them)
    assert f"migrate exited with 2: see {run_dir / 'logs' / 'migrate.log'}" in result.stderr
    assert "log_level" in (run_dir / "logs" / "migrate.log").read_text()
    redis_pid = int((run_dir / "redis.pid").read_text())
    assert not _alive(redis_pid)
    assert not (run_dir / "stack.json").exists()
