"""Separate hosts on one machine: a network namespace per host, each with a veth pair into a
bridge of the root namespace, and the services the hosts share listening on the bridge.

```
root namespace                      bridge 10.a.b.1
  client ─► nginx ─────────────────────┬─ veth ─► namespace h1: eth0 10.a.b.11, a replica
  PostgreSQL, Redis, S3 emulator ──────┼─ veth ─► namespace h2: eth0 10.a.b.12, a replica
  (listening on 10.a.b.1 only)         └─ veth ─► namespace h3: eth0 10.a.b.13, a replica
```

Names carry a random tag and the subnet is one no interface of the machine uses, so a run
never collides with another, or with what a crashed run left. Everything is removed on exit.
A host's `launcher` also gives it a mount namespace with a fresh tmpfs on its data directory:
the same path on every host, and no host sees another's files.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import redis

from scripts.local_stack import nginx_config
from tests.live_server import free_port
from tests.stores import new_bucket
from tests.streaming.replicas import Replica

PACKAGES = {"ip": "iproute2", "unshare": "util-linux", "setpriv": "util-linux",
            "nginx": "nginx-light", "redis-server": "redis-server", "bash": "bash"}  # fmt: skip
SEARCH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"  # ip and nginx live in sbin
POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))


def tool(name: str) -> str:
    return shutil.which(name, path=SEARCH) or name


def unsupported() -> str | None:
    """Why separate hosts cannot be built here (not root, a tool missing, no namespaces)."""
    if os.geteuid() != 0:
        return "separate hosts need root (ip netns add, mount)"
    missing = [f"{name} ({package})" for name, package in PACKAGES.items()
               if not shutil.which(name, path=SEARCH)]  # fmt: skip
    if not POSTGRES_BIN:
        missing.append("/usr/lib/postgresql/*/bin/postgres (postgresql)")
    if missing:
        return f"not installed: {', '.join(missing)}"
    probe = f"gradual-probe-{uuid.uuid4().hex[:8]}"
    made = subprocess.run([tool("ip"), "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"no network namespaces here (ip netns add: {made.stderr.strip()})"
    ip("netns", "del", probe)
    return None


def orphan_proof(argv: list[str]) -> list[str]:
    """`argv`, SIGKILLed should the thread that started it die: a test run killed outright
    leaves no server running in a namespace (its namespaces and bridge stay, harmless, under
    names no later run takes)."""
    return [tool("setpriv"), "--pdeathsig", "KILL", *argv]


def ip(*args: str) -> None:
    done = subprocess.run([tool("ip"), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Network:
    """A bridge and `hosts` namespaces; host i (from 1) has address .1i, the bridge .1."""

    tag: str
    subnet: ipaddress.IPv4Network
    hosts: int

    @property
    def bridge(self) -> str:
        return f"gh{self.tag}b"  # interface names have at most 15 characters

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    def namespace(self, host: int) -> str:
        return f"gradual-{self.tag}-h{host}"

    def address(self, host: int) -> str:
        return str(self.subnet.network_address + 10 + host)

    def launcher(self, host: int, data_dir: Path) -> list[str]:
        """Runs a command on `host`, with a tmpfs of its own on `data_dir`; exec all the way,
        so that the command keeps the launcher's pid (a SIGKILL reaches the command)."""
        mount = 'mount -t tmpfs -o mode=0700,size=256m gradual-data "$0" && exec "$@"'
        return orphan_proof([
            tool("ip"), "netns", "exec", self.namespace(host), tool("unshare"), "--mount",
            "--propagation", "private", "sh", "-c", mount, str(data_dir),
        ])  # fmt: skip

    def create(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for host in range(1, self.hosts + 1):
            name, veth = self.namespace(host), f"gh{self.tag}v{host}"
            ip("netns", "add", name)
            ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("link", "set", veth, "master", self.bridge, "up")
            cidr = f"{self.address(host)}/{self.subnet.prefixlen}"
            ip("-n", name, "addr", "add", cidr, "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")

    def remove(self) -> None:
        """Deleting a namespace deletes its end of the veth pair, and so the pair."""
        for host in range(1, self.hosts + 1):
            subprocess.run([tool("ip"), "netns", "del", self.namespace(host)], capture_output=True)
        subprocess.run([tool("ip"), "link", "del", self.bridge], capture_output=True)

    def connects(self, host: int, address: str, port: int) -> bool:
        """Whether a TCP connection from `host` to `address`:`port` opens."""
        probe = f"exec 3<>/dev/tcp/{address}/{port}"
        argv = [tool("ip"), "netns", "exec", self.namespace(host), tool("bash"), "-c", probe]
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0


def unused_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.0.0.0/8 that overlaps no address or route of the machine."""
    taken = [ipaddress.ip_network("127.0.0.0/8")]
    for entry in json.loads(subprocess.check_output([tool("ip"), "-j", "-4", "addr"])):
        for found in entry.get("addr_info", []):
            taken.append(ipaddress.ip_network(f"{found['local']}/{found['prefixlen']}", False))
    for route in json.loads(subprocess.check_output([tool("ip"), "-j", "-4", "route"])):
        if route.get("dst", "default") != "default":
            taken.append(ipaddress.ip_network(route["dst"], strict=False))
    while True:
        second, third = random.randrange(64, 250), random.randrange(256)
        subnet = ipaddress.ip_network(f"10.{second}.{third}.0/24")
        if not any(subnet.overlaps(other) for other in taken):
            return subnet


@contextmanager
def network(hosts: int) -> Iterator[Network]:
    """A bridge and `hosts` namespaces, removed afterwards (even when creating them failed)."""
    made = Network(uuid.uuid4().hex[:6], unused_subnet(), hosts)
    try:
        made.create()
        yield made
    finally:
        made.remove()


@contextmanager
def shared_services(net: Network, folder: Path, logs: Path) -> Iterator[dict[str, str]]:
    """PostgreSQL, Redis and the S3 emulator on the bridge, for the block: the settings that
    point replicas of `net` at them (and trust the hosts' addresses as Host headers)."""
    with ExitStack() as stack:
        endpoint = stack.enter_context(s3_server(net.gateway, logs))
        database = stack.enter_context(postgres(net.gateway, net.subnet, folder, logs))
        redis_url = stack.enter_context(redis_server(net.gateway, folder, logs))
        data_dir = folder / "data"  # on every host the same path, and a tmpfs of its own
        data_dir.mkdir()
        addresses = [net.address(host) for host in range(1, net.hosts + 1)]
        yield {
            "GRADUAL_DATABASE_URL": database, "GRADUAL_REDIS_URL": redis_url,
            "GRADUAL_WEIGHTS_URL": f"s3://{new_bucket(endpoint)}/weights",
            "GRADUAL_S3_ENDPOINT": endpoint, "GRADUAL_S3_ACCESS_KEY_ID": "testing",
            "GRADUAL_S3_SECRET_ACCESS_KEY": "testing", "GRADUAL_DATA_DIR": str(data_dir),
            "GRADUAL_TRUSTED_HOSTS": ",".join(["127.0.0.1", *addresses]),
        }  # fmt: skip


def replica_on(
    net: Network, host: int, env: dict[str, str], log: Path, *, token: str | None = None
) -> Replica:
    """A replica named h<host> serving on port 8000 of `host` (each host has its own ports)."""
    return Replica(
        f"h{host}", env, log, host=net.address(host), port=8000, token=token,
        launcher=net.launcher(host, Path(env["GRADUAL_DATA_DIR"])),
    )  # fmt: skip


@contextmanager
def home() -> Iterator[Path]:
    """A folder every service's user can enter (PostgreSQL runs as `postgres`), removed after."""
    folder = Path(tempfile.mkdtemp(prefix="gradual-hosts-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def running(
    argv: list[str], log: Path, *, user: str | None = None, stop: int = signal.SIGTERM
) -> Iterator[subprocess.Popen[bytes]]:
    """A process for the block: `stop` afterwards, SIGKILL if it lingers."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            orphan_proof(argv), stdout=out, stderr=subprocess.STDOUT, user=user
        )
    try:
        yield process
    finally:
        process.send_signal(stop)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


@contextmanager
def postgres(
    address: str, subnet: ipaddress.IPv4Network, folder: Path, logs: Path
) -> Iterator[str]:
    """A PostgreSQL cluster of its own in `folder`, listening on `address` only and trusting
    `subnet`: its URL. Throw-away data: no fsync."""
    binaries = POSTGRES_BIN[-1].parent
    data = folder / "postgres"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    initdb = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    subprocess.run([*initdb, "--no-sync", "-E", "UTF8"], check=True, capture_output=True,
                   user="postgres")  # fmt: skip
    with (data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {subnet} trust\n")
    port = free_port(address)
    settings = {"listen_addresses": address, "port": port, "unix_socket_directories": "",
                "fsync": "off", "full_page_writes": "off", "max_connections": 200}  # fmt: skip
    argv = [str(binaries / "postgres"), "-D", str(data)]
    argv += [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    url = f"postgresql://postgres@{address}:{port}/postgres"
    log = logs / "postgres.log"
    with running(argv, log, user="postgres", stop=signal.SIGINT) as process:  # a fast stop
        wait_for(lambda: psycopg.connect(url, connect_timeout=2).close(), process, log)
        yield url.replace("postgresql://", "postgresql+psycopg://")


@contextmanager
def s3_server(address: str, logs: Path) -> Iterator[str]:
    """moto's standalone S3 server (the emulator) listening on `address`: its endpoint."""
    port = free_port(address)
    argv = [sys.executable, "-m", "moto.server", "-H", address, "-p", str(port)]
    endpoint, log = f"http://{address}:{port}", logs / "s3.log"
    with running(argv, log) as process:
        wait_for(lambda: httpx.get(endpoint, timeout=2), process, log)
        yield endpoint


@contextmanager
def redis_server(address: str, folder: Path, logs: Path) -> Iterator[str]:
    """A Redis of its own listening on `address` only: its URL."""
    port = free_port(address)
    argv = [tool("redis-server"), "--bind", address, "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(folder), "--protected-mode", "no"]
    url = f"redis://{address}:{port}/0"
    log = logs / "redis.log"
    with running(argv, log) as process:
        wait_for(lambda: redis.Redis.from_url(url, socket_connect_timeout=2).ping(), process, log)
        yield url


@contextmanager
def balancer(listen: str, upstreams: list[str], folder: Path, logs: Path) -> Iterator[Path]:
    """Debian's nginx running docker/nginx.conf in front of `upstreams`: its log (access
    lines name the upstream that answered). One process, no workers: a worker would outlive
    a master killed with the test run."""
    config = nginx_config(folder, listen, upstreams)
    log = logs / "nginx.log"
    host, port = listen.rsplit(":", 1)
    argv = [tool("nginx"), "-p", str(config.parent), "-c", str(config)]
    with running([*argv, "-g", "master_process off;"], log) as process:
        wait_for(lambda: socket.create_connection((host, int(port)), 2).close(), process, log)
        yield log


def wait_for(attempt: Callable[[], object], process: subprocess.Popen[bytes], log: Path) -> None:
    """Calls `attempt` until it stops raising; fails if `process` exits first, or after 60 s."""
    deadline = time.monotonic() + 60
    while True:
        try:
            attempt()
            return
        except Exception:
            assert process.poll() is None, f"{log.stem} exited at start; see {log}"
            assert time.monotonic() < deadline, f"{log.stem} not ready in 60 s; see {log}"
            time.sleep(0.1)


def mounted_at(pid: int, path: Path) -> tuple[str, str] | None:
    """(filesystem type, device) on top at `path` as process `pid` sees it, or None."""
    found = None
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == str(path):
                found = fields[fields.index("-") + 1], fields[2]
    return found
