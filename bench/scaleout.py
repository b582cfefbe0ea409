"""Scale-out figures: balance after a join and a leave, handoff times, predict rows/s through
nginx with one and with three replicas (same run), memory per resident model.

On loopback (the default) it needs PostgreSQL and Redis (the tests' URLs:
GRADUAL_TEST_POSTGRES_URL, GRADUAL_TEST_REDIS_URL) and Debian's nginx; the replicas share a
weight folder. With `--hosts` (root) each replica runs on a host of its own, a network
namespace with a data directory no other sees, and PostgreSQL, Redis and the S3 emulator of
their own listen on the bridge (tests/streaming/hosts.py); the API is open there
(GRADUAL_INSECURE), as the load generator sends no token. Replicas run with the service's
defaults (lease 5 s) unless `--lease`.
`python -m bench.scaleout [--models 24] [--seconds 5] [--lease 5] [--hosts]`
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psycopg

from bench.wire import run_load
from tests.conftest import POSTGRES_URL, REDIS_URL
from tests.factories import labelled, model_body, rows
from tests.live_server import free_port
from tests.streaming import hosts
from tests.streaming.replicas import Replica, wait_until

NGINX = """worker_processes 1; daemon off; pid {home}/nginx.pid; error_log {home}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; client_body_temp_path {home}/body; proxy_temp_path {home}/proxy;
  upstream one {{ server {a}; keepalive 64; }}
  upstream three {{ server {a}; server {b}; server {c}; keepalive 64; }}
  server {{ listen 127.0.0.1:{one}; location / {{ proxy_pass http://one;
    proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }} }}
  server {{ listen 127.0.0.1:{three}; location / {{ proxy_pass http://three;
    proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; }} }}
}}
"""


def rss_mb(replica: Replica) -> float:
    assert replica.process is not None
    for line in Path(f"/proc/{replica.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def owned(replicas: list[Replica]) -> list[int]:
    return [len(r.owned()) for r in replicas]


def balanced(replicas: list[Replica], models: int) -> bool:
    counts = owned(replicas)
    share = models / len(replicas)
    return sum(counts) == models and all(abs(c - share) < 1.01 for c in counts)


def stream(replicas: list[Replica], names: list[str], stop: threading.Event) -> None:
    """Queued batches to every model in turn, so that a handoff has entries waiting."""
    n = 0
    while not stop.is_set():
        for name in names:
            alive = [r for r in replicas if r.process and r.process.poll() is None]
            body = labelled(8, seed=n) | {"batch_id": f"s{n}"}
            with contextlib.suppress(Exception):  # a replica going away: the next takes one
                alive[n % len(alive)].post(f"/v1/models/{name}/partial-fit?wait=false", body)
            n += 1


def nginx(home: Path, upstreams: list[str], ports: dict[str, int]) -> subprocess.Popen[bytes]:
    for folder in ("body", "proxy"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    a, b, c = upstreams
    (home / "nginx.conf").write_text(NGINX.format(home=home, a=a, b=b, c=c, **ports))
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    process = subprocess.Popen([binary, "-p", str(home), "-c", str(home / "nginx.conf")])
    time.sleep(0.5)
    return process


def predict_rates(ports: dict[str, int], seconds: float) -> dict[str, float]:
    body = orjson.dumps({"inputs": rows(64, seed=1)})
    rates: dict[str, list[float]] = {"one": [], "three": []}
    for _ in range(2):  # interleaved, twice
        for key in rates:
            result = run_load(ports[key], "/v1/models/m00/predict", [body], clients=16,
                              seconds=seconds)  # fmt: skip
            rates[key].append(result.rate * 64)
    return {key: statistics.median(values) for key, values in rates.items()}


def handoff_times(replica: Replica, since: float) -> dict[str, Any]:
    records = [h for h in replica.get("/v1/cluster")["handoffs"] if h.get("decided", 0) >= since]
    released = sorted(h["released"] - h["decided"] for h in records if "released" in h)
    took = sorted(h["takeover_s"] for h in records if "takeover_s" in h)
    first = sorted(h["first_entry_s"] for h in records if "first_entry_s" in h)
    return {
        "count": len(records),
        "released_p50_s": round(statistics.median(released), 4) if released else None,
        "released_max_s": round(max(released), 4) if released else None,
        "takeover_p50_s": statistics.median(took) if took else None,
        "takeover_max_s": max(took) if took else None,
        "first_entry_p50_s": statistics.median(first) if first else None,
        "first_entry_max_s": max(first) if first else None,
    }


def takeovers(replica: Replica, killed: float) -> dict[str, Any]:
    """A dead owner's models (nobody released them): seconds from the kill to each takeover."""
    records = replica.get("/v1/cluster")["handoffs"]
    took = sorted(h["taken"] - killed for h in records
                  if h["reason"] == "vacant" and h.get("taken", 0) >= killed)  # fmt: skip
    return {
        "count": len(took),
        "p50_s": round(statistics.median(took), 3) if took else None,
        "max_s": round(max(took), 3) if took else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--hosts", action="store_true", help="a network namespace per replica")
    args = parser.parse_args()
    balancers: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        home = stack.enter_context(hosts.home())
        place = separate_hosts if args.hosts else loopback
        replicas = stack.enter_context(place(args, home))
        try:
            run(args, replicas, home, balancers)
        finally:
            for replica in replicas:
                replica.kill_quietly()
                replica.stop()
            for balancer in balancers:
                balancer.terminate()


@contextlib.contextmanager
def loopback(args: argparse.Namespace, home: Path) -> Iterator[list[Replica]]:
    """Four replicas on loopback ports, on the machine's PostgreSQL (a schema of their own)
    and Redis, sharing a weight folder."""
    schema = f"gradual_bench_{uuid.uuid4().hex[:8]}"
    libpq = POSTGRES_URL.replace("+psycopg", "")
    with psycopg.connect(libpq, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    env = {
        "GRADUAL_DATABASE_URL": f"{POSTGRES_URL}?options=-csearch_path%3D{schema}",
        "GRADUAL_REDIS_URL": REDIS_URL, "GRADUAL_REDIS_PREFIX": f"bench-{schema}",
        "GRADUAL_DATA_DIR": str(home / "data"), "GRADUAL_LEASE_TTL_S": str(args.lease),
    }  # fmt: skip
    try:
        yield [Replica(n, env, home / f"{n}.log") for n in ("a", "b", "c", "d")]
    finally:
        with psycopg.connect(libpq, autocommit=True) as admin:  # the server may have restarted
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextlib.contextmanager
def separate_hosts(args: argparse.Namespace, home: Path) -> Iterator[list[Replica]]:
    """Four replicas, each on a host of its own (a network namespace), with PostgreSQL,
    Redis and the S3 emulator on the bridge; the network is removed afterwards."""
    reason = hosts.unsupported()
    if reason:
        raise SystemExit(f"--hosts: {reason}")
    with hosts.network(4) as net, hosts.shared_services(net, home, home) as shared:
        env = shared | {"GRADUAL_LEASE_TTL_S": str(args.lease), "GRADUAL_INSECURE": "true"}
        print(f"hosts {', '.join(map(net.address, range(1, 5)))} on bridge {net.gateway}")
        yield [hosts.replica_on(net, i, env, home / f"h{i}.log") for i in range(1, 5)]


def run(
    args: argparse.Namespace, replicas: list[Replica], home: Path,
    balancers: list[subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    a, b, c, d = replicas
    for replica in (a, b, c):
        replica.launch()
    assert all(r.wait_ready() for r in (a, b, c))
    before = rss_mb(b)
    names = [f"m{i:02d}" for i in range(args.models)]
    for name in names:
        assert a.post("/v1/models", model_body(name)).status_code == 201
    took = wait_until(lambda: balanced([a, b, c], args.models), timeout=120, step=0.1)
    print(f"figure balance after creating {args.models} models on 3 replicas: {took:.2f} s")
    wait_until(lambda: b.get("/readyz")["detail"]["models"] == args.models, timeout=30)
    print(f"figure memory per resident model (follower RSS): "
          f"{(rss_mb(b) - before) / args.models:.2f} MB")  # fmt: skip
    ports = {"one": free_port(), "three": free_port()}
    upstreams = [f"{r.host}:{r.port}" for r in (a, b, c)]
    balancers.append(nginx(home / "nginx", upstreams, ports))
    rates = predict_rates(ports, args.seconds)
    print(f"figure predict rows/s through nginx: 1 replica {rates['one']:.0f}, "
          f"3 replicas {rates['three']:.0f} ({rates['three'] / rates['one']:.2f}x)")  # fmt: skip
    stop = threading.Event()
    streamer = threading.Thread(target=stream, args=(replicas, names, stop), daemon=True)
    streamer.start()
    try:
        since = time.time()
        d.start()
        took = wait_until(lambda: balanced([a, b, c, d], args.models), timeout=120, step=0.1)
        print(f"figure balance after a join (3 -> 4, streaming): {took:.2f} s")
        time.sleep(2)
        print(f"figure handoffs after the join: {handoff_times(a, since)}")
        since = time.time()
        d.stop()
        took = wait_until(lambda: balanced([a, b, c], args.models), timeout=120, step=0.1)
        print(f"figure balance after a graceful leave (SIGTERM, 4 -> 3): {took:.2f} s")
        time.sleep(2)
        print(f"figure handoffs after the leave: {handoff_times(a, since)}")
        since = time.time()
        c.kill()
        took = wait_until(lambda: balanced([a, b], args.models), timeout=120, step=0.1)
        print(f"figure balance after a SIGKILL (3 -> 2, lease {args.lease:g} s): {took:.2f} s")
        time.sleep(2)
        print(f"figure SIGKILL -> a survivor took each model: {takeovers(a, since)}")
    finally:
        stop.set()


if __name__ == "__main__":
    main()
