"""The compose topology with real processes on loopback, configured by the same .env file.

PostgreSQL is the machine's (a dedicated role and database, made from POSTGRES_USER,
POSTGRES_PASSWORD and POSTGRES_DB); Redis is a private `redis-server` with the password, the
append-only file and the eviction policy of docker-compose.yml; then the one-shot migration,
STACK_API_REPLICAS replicas of `gradual serve` (one port each) and Debian's nginx running
docker/nginx.conf in front of them on STACK_PUBLISH_ADDRESS:STACK_PUBLISH_PORT. Pid files,
logs and each component's state live in the run directory. Run it as `scripts/local-stack`.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
NGINX_TEMPLATE = ROOT / "docker" / "nginx.conf"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REQUIRED = ("POSTGRES_PASSWORD", "REDIS_PASSWORD")  # compose refuses to start without them
NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
STOP_GRACE_S = {"api": 60.0, "balancer": 10.0, "redis": 10.0}  # as docker-compose.yml
# As the images stop them: nginx's graceful stop is SIGQUIT (SIGTERM drops connections).
STOP_SIGNAL = {"balancer": signal.SIGQUIT}


class StackError(RuntimeError):
    """A component failed to start or the configuration is unusable."""


@dataclass
class Component:
    """A process `up` started; its start time tells it from a later process given its pid."""

    name: str
    pid: int
    url: str = ""
    started: str = ""

    def __post_init__(self) -> None:
        self.started = self.started or _start_time(self.pid)

    @property
    def kind(self) -> str:
        return self.name.split("-")[0]

    def running(self) -> bool:
        return alive(self.pid) and _start_time(self.pid) == self.started


@dataclass
class Stack:
    """What `up` started: read back by `down` and `status` (stack.json in the run dir)."""

    run_dir: str
    admin_url: str
    database: str
    role: str
    database_url: str
    redis_url: str
    balancer_url: str = ""
    components: list[Component] = field(default_factory=list)

    def save(self) -> None:
        (Path(self.run_dir) / "stack.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, run_dir: Path) -> Stack:
        data = json.loads((run_dir / "stack.json").read_text())
        data["components"] = [Component(**c) for c in data["components"]]
        return cls(**data)

    def replicas(self) -> list[Component]:
        return [c for c in self.components if c.name.startswith("api-")]


# -- configuration -----------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as compose reads them: comments, blank lines, optional quotes."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    missing = [key for key in REQUIRED if not values.get(key)]
    if missing:
        raise StackError(f"set {', '.join(missing)} in {path}")
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def identifier(env: dict[str, str], key: str, default: str) -> str:
    value = env.get(key) or default
    if not NAME.fullmatch(value):
        raise StackError(f"{key}={value!r}: use lower-case letters, digits and underscores")
    return value


# -- processes ---------------------------------------------------------------------------------


def spawn(run_dir: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
    """Starts a detached process logging to logs/<name>.log; records <name>.pid."""
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True,  # survives `up`; its own process group for `down`
        )  # fmt: skip
    (run_dir / f"{name}.pid").write_text(f"{process.pid}\n")
    return process.pid


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; [] when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _start_time(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""  # starttime, in clock ticks since boot


def alive(pid: int) -> bool:
    """Running, and not a zombie (exited, not yet reaped: stopped all the same)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def stop(component: Component) -> bool:
    """The stop signal, then SIGKILL after the grace period; True when it stopped in time."""
    if not component.running():
        return True
    os.kill(component.pid, STOP_SIGNAL.get(component.kind, signal.SIGTERM))
    deadline = time.monotonic() + STOP_GRACE_S.get(component.kind, 10.0)
    while time.monotonic() < deadline:
        if not alive(component.pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(component.pid, signal.SIGKILL)
    return False


def wait_until(check: Callable[[], bool], *, pid: int, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        if not alive(pid):
            raise StackError(f"{what} exited during start-up")
        time.sleep(0.1)
    raise StackError(f"{what} not ready after {timeout_s:.0f} s")


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=2).status_code == 200


# -- components --------------------------------------------------------------------------------


def prepare_database(admin_url: str, role: str, password: str, database: str) -> str:
    """The dedicated role and database that the postgres image makes from the same names."""
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        admin.execute(
            sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if found.fetchone() is None:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(role)
                )
            )
    parts = urlsplit(admin_url)
    host = f"{parts.hostname or '127.0.0.1'}:{parts.port or 5432}"
    return f"postgresql+psycopg://{role}:{password}@{host}/{database}"


def start_redis(run_dir: Path, env: dict[str, str]) -> tuple[Component, str]:
    """redis-server with docker-compose.yml's flags; the password stays out of `ps`."""
    port, password = free_port(), env["REDIS_PASSWORD"]
    data = run_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    config = data / "redis.conf"
    config.touch(mode=0o600)
    config.write_text(
        f"bind 127.0.0.1\nport {port}\ndir {data}\nrequirepass {password}\n"
        'appendonly yes\nappendfsync everysec\nsave ""\n'
        f"maxmemory {env.get('REDIS_MAXMEMORY') or '1gb'}\nmaxmemory-policy noeviction\n"
    )
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    pid = spawn(run_dir, "redis", [redis_server, str(config)])
    client = redis.Redis(port=port, password=password, socket_timeout=2)
    wait_until(lambda: bool(client.ping()), pid=pid, what="redis", timeout_s=15)
    client.close()
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    return Component("redis", pid, f"redis://127.0.0.1:{port}"), url


def gradual_env(stack: Stack, env: dict[str, str], name: str) -> dict[str, str]:
    """The environment compose gives a Gradual container: env_file, then `environment`."""
    run_dir = Path(stack.run_dir)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GRADUAL_")}
    return {  # a container inherits nothing of the host's GRADUAL_* settings
        **inherited, **env,
        "GRADUAL_DATABASE_URL": stack.database_url,
        "GRADUAL_REDIS_URL": stack.redis_url,
        "GRADUAL_WEIGHTS_DIR": str(run_dir / "weights"),
        "GRADUAL_DATA_DIR": str(run_dir / name),
        "GRADUAL_REPLICA_ID": name,
        "GRADUAL_DEVICE": env.get("GRADUAL_DEVICE") or "cpu",
    }  # fmt: skip


def migrate(stack: Stack, env: dict[str, str]) -> None:
    """The compose `migrate` service: runs to completion before any replica starts."""
    log = Path(stack.run_dir) / "logs" / "migrate.log"
    with log.open("ab") as output:
        result = subprocess.run(
            [sys.executable, "-m", "service", "migrate"], cwd=ROOT, stdout=output,
            stderr=output, env=gradual_env(stack, env, "migrate"), timeout=120, check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"migrate exited with {result.returncode}: see {log}")


def start_replicas(stack: Stack, env: dict[str, str], count: int) -> list[Component]:
    started = []
    for index in range(1, count + 1):
        name, port = f"api-{index}", free_port()
        argv = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--workers", "1"]
        argv += ["--port", str(port)]
        pid = spawn(Path(stack.run_dir), name, argv, gradual_env(stack, env, name))
        started.append(Component(name, pid, f"http://127.0.0.1:{port}"))
        stack.components.append(started[-1])
    for replica in started:  # the image's HEALTHCHECK: /readyz answers 200
        check = http_ok(f"{replica.url}/readyz")
        wait_until(check, pid=replica.pid, what=replica.name, timeout_s=120)
    return started


def nginx_config(run_dir: Path, listen: str, upstreams: list[str]) -> Path:
    """docker/nginx.conf, templated for the `upstreams` (host:port each), in a main config of
    the run dir."""
    home = run_dir / "nginx"
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = {kind: home / "tmp" / kind for kind in kinds}
    for folder in temp.values():
        folder.mkdir(parents=True, exist_ok=True)
    servers = " ".join(f"server {upstream};" for upstream in upstreams)
    upstream = f"upstream gradual_api {{ zone gradual_api 64k; {servers} keepalive 16; }}"
    values = {"BALANCER_LISTEN": listen, "BALANCER_UPSTREAM": upstream}
    values["BALANCER_TARGET"] = "gradual_api"
    site = re.sub(r"\$\{(BALANCER_\w+)\}", lambda m: values[m[1]], NGINX_TEMPLATE.read_text())
    (home / "gradual.conf").write_text(site)
    user = ""
    if os.geteuid() == 0:  # workers drop to nobody: they need the temp folders
        nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        for folder in temp.values():
            os.chown(folder, nobody, nogroup)
        user = "user nobody nogroup;\n"
    temps = "".join(f"    {kind}_temp_path {path};\n" for kind, path in temp.items())
    main = home / "nginx.conf"
    main.write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {home / 'nginx.pid'};\n"
        "error_log stderr warn;\nevents { worker_connections 512; }\n"
        f"http {{\n{temps}    include {home / 'gradual.conf'};\n}}\n"
    )
    return main


def start_balancer(stack: Stack, env: dict[str, str], port: int) -> Component:
    address = env.get("STACK_PUBLISH_ADDRESS") or "127.0.0.1"
    run_dir = Path(stack.run_dir)
    upstreams = [urlsplit(replica.url).netloc for replica in stack.replicas()]
    config = nginx_config(run_dir, f"{address}:{port}", upstreams)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    pid = spawn(run_dir, "balancer", [nginx, "-p", str(config.parent), "-c", str(config)])
    url = f"http://{address}:{port}"
    wait_until(http_ok(f"{url}/readyz"), pid=pid, what="balancer", timeout_s=15)
    return Component("balancer", pid, url)


# -- commands ----------------------------------------------------------------------------------


def up(args: argparse.Namespace) -> int:
    env = read_env_file(args.env_file)
    run_dir: Path = args.run_dir.resolve()
    if (run_dir / "stack.json").exists():
        raise StackError(f"a stack is recorded in {run_dir}: `down` it first")
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    role = identifier(env, "POSTGRES_USER", "gradual")
    database = identifier(env, "POSTGRES_DB", "gradual")
    database_url = prepare_database(args.postgres_admin, role, env["POSTGRES_PASSWORD"], database)
    stack = Stack(str(run_dir), args.postgres_admin, database, role, database_url, "")
    try:
        start_all(stack, env, args.publish_port)
    except BaseException:
        for component in reversed(stack.components):  # nothing half-started stays behind
            stop(component)
        raise
    stack.save()
    print_status(stack)
    return 0


def start_all(stack: Stack, env: dict[str, str], publish_port: int | None) -> None:
    """In compose's order: redis (postgres is up), migrate, the replicas, the balancer."""
    redis_component, stack.redis_url = start_redis(Path(stack.run_dir), env)
    stack.components.append(redis_component)
    migrate(stack, env)
    start_replicas(stack, env, int(env.get("STACK_API_REPLICAS") or 2))
    port = publish_port or int(env.get("STACK_PUBLISH_PORT") or 8000)
    balancer = start_balancer(stack, env, port)
    stack.components.append(balancer)
    stack.balancer_url = balancer.url


def down(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir.resolve()
    if not (run_dir / "stack.json").exists():
        print(f"no stack recorded in {run_dir}")
        return 0
    stack = Stack.load(run_dir)
    clean = True
    for component in reversed(stack.components):  # balancer, replicas, then redis
        graceful = stop(component)
        clean &= graceful
        print(f"{component.name:10} {'stopped' if graceful else 'killed after the grace period'}")
        (run_dir / f"{component.name}.pid").unlink(missing_ok=True)
    (run_dir / "stack.json").unlink()
    if args.purge:
        drop_database(stack)
        shutil.rmtree(run_dir)
    return 0 if clean else 1


def drop_database(stack: Stack) -> None:
    with psycopg.connect(stack.admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (stack.database,),
        )
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(stack.database)))
        with contextlib.suppress(psycopg.errors.DependentObjectsStillExist):
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(stack.role)))


def health(component: Component) -> str:
    if not component.running():
        return "down"
    if not component.url.startswith("http"):
        return "running"
    try:
        response = httpx.get(f"{component.url}/readyz", timeout=2)
    except httpx.HTTPError as exc:
        return f"unreachable ({type(exc).__name__})"
    return "ready" if response.status_code == 200 else f"not ready ({response.status_code})"


def print_status(stack: Stack) -> bool:
    healthy = True
    for component in stack.components:
        state = health(component)
        healthy &= state in ("ready", "running")
        print(f"{component.name:10} pid {component.pid:<8} {state:12} {component.url}")
    print(f"{'postgres':10} database {stack.database} (role {stack.role})")
    print(f"logs: {stack.run_dir}/logs   balancer: {stack.balancer_url}")
    return healthy


def status(args: argparse.Namespace) -> int:
    run_dir: Path = args.run_dir.resolve()
    if not (run_dir / "stack.json").exists():
        print(f"no stack recorded in {run_dir}")
        return 3
    return 0 if print_status(Stack.load(run_dir)) else 1


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="local-stack", description=__doc__)
    main.add_argument("--run-dir", type=Path, default=ROOT / ".local-stack")
    commands = main.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the stack; fails with the log to read")
    start.add_argument("--env-file", type=Path, default=ROOT / "docker" / ".env")
    start.add_argument(
        "--postgres-admin", default=os.environ.get("LOCAL_STACK_POSTGRES", ADMIN_URL)
    )
    start.add_argument("--publish-port", type=int, help="override STACK_PUBLISH_PORT")
    start.set_defaults(run=up)
    finish = commands.add_parser("down", help="SIGTERM every component, SIGKILL past its grace")
    finish.add_argument("--purge", action="store_true", help="also drop the database and run dir")
    finish.set_defaults(run=down)
    commands.add_parser("status", help="each component's pid and health").set_defaults(run=status)
    return main


@contextlib.contextmanager
def reported() -> Iterator[None]:
    try:
        yield
    except (StackError, psycopg.OperationalError, OSError) as exc:
        print(f"local-stack: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with reported():
        code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
