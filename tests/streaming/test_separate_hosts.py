"""Replicas on separate hosts: three `gradual serve`, each in a network namespace of its own
(a veth pair into a bridge of the root namespace) with a data directory no other can see,
sharing only what they reach over that network: a PostgreSQL, a Redis and the S3 emulator
listening on the bridge. A client and nginx in the root namespace create models, stream
batches and predict; a SIGKILLed host's models move to the other two, and every model's
`samples_seen` equals the rows of its acknowledged batches (nothing lost, nothing twice).
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import cannot_run
from tests.factories import model_body, rows
from tests.live_server import free_port
from tests.streaming.hosts import (
    Network,
    balancer,
    home,
    mounted_at,
    network,
    replica_on,
    shared_services,
    unsupported,
)
from tests.streaming.replicas import Cluster, Ledger, Replica, wait_until

pytestmark = [pytest.mark.slow]

HOSTS, MODELS = 3, [f"m{i}" for i in range(6)]
ROWS, LEASE_S = 4, 2.0
TOKEN = f"hosts-{secrets.token_hex(8)}"  # a bind beyond loopback needs API tokens
UPSTREAM = re.compile(r'"POST (\S+) [^"]*" (\d{3}) .* upstream=(\S+(?:, \S+)*) rt=')


class Balancer:
    """nginx in the root namespace, as the client reaches it, and its access log."""

    def __init__(self, url: str, log: Path) -> None:
        self.log = log
        self.http = httpx.Client(
            base_url=url, timeout=60, headers={"authorization": f"Bearer {TOKEN}"}
        )

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body)

    def mark(self) -> int:
        return self.log.stat().st_size

    def answered(self, since: int, path_end: str) -> Counter[str]:
        """The upstream that answered each request to a path ending `path_end`, by status."""
        with self.log.open("rb") as log:
            log.seek(since)
            lines = log.read().decode().splitlines()
        found: Counter[str] = Counter()
        for match in filter(None, map(UPSTREAM.search, lines)):
            if match[1].endswith(path_end):
                found[f"{match[2]} {match[3].split(', ')[-1]}"] += 1
        return found


@dataclass
class Site:
    network: Network
    cluster: Cluster
    balancer: Balancer
    data_dir: Path
    database_port: int


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = unsupported()
    if reason:
        cannot_run(reason)
    logs = tmp_path_factory.mktemp("hosts-logs")
    with ExitStack() as stack:
        folder = stack.enter_context(home())
        net = stack.enter_context(network(HOSTS))
        env = stack.enter_context(shared_services(net, folder, logs)) | {
            "GRADUAL_API_TOKENS": f"admin={TOKEN}",
            "GRADUAL_LEASE_TTL_S": str(LEASE_S), "GRADUAL_SYNC_EVERY_S": "0.3",
            "GRADUAL_LOG_LEVEL": "info",  # the replicas' logs tell the handoffs, if a test fails
        }  # fmt: skip
        replicas = {
            f"h{i}": replica_on(net, i, env, logs / f"h{i}.log", token=TOKEN)
            for i in range(1, HOSTS + 1)
        }
        stack.callback(kill_all, replicas)
        for replica in replicas.values():
            replica.launch()
        assert all(replica.wait_ready() for replica in replicas.values())
        listen = f"127.0.0.1:{free_port()}"
        upstreams = [f"{r.host}:{r.port}" for r in replicas.values()]
        log = stack.enter_context(balancer(listen, upstreams, folder, logs))
        client = Balancer(f"http://{listen}", log)
        stack.callback(client.http.close)
        port = urlsplit(env["GRADUAL_DATABASE_URL"]).port
        assert port is not None
        data_dir = Path(env["GRADUAL_DATA_DIR"])
        yield Site(net, Cluster(replicas, MODELS, Ledger(ROWS)), client, data_dir, port)


def kill_all(replicas: dict[str, Replica]) -> None:
    for replica in replicas.values():
        replica.kill_quietly()
        replica.stop()


def stream(site: Site, client: int, stop: threading.Event) -> None:
    """Batches to every model in turn through nginx, until `stop`."""
    n = 0
    while not stop.is_set():
        for i, model in enumerate(MODELS):
            batch_id = f"c{client}-{n}-{model}"
            site.cluster.ledger.send(site.balancer, model, batch_id, seed=n * 31 + i, wait=True)
        n += 1


def streaming(site: Site, clients: int) -> tuple[threading.Event, list[threading.Thread]]:
    stop = threading.Event()
    threads = [
        threading.Thread(target=stream, args=(site, k, stop), daemon=True) for k in range(clients)
    ]
    for thread in threads:
        thread.start()
    return stop, threads


def settle(site: Site) -> None:
    """Waits for every acknowledged batch to be applied (a `202` or a duplicate may still be
    queued), then compares every model's count with the ledger's."""
    cluster = site.cluster
    with suppress(AssertionError):
        wait_until(lambda: cluster.samples() == cluster.expected(), timeout=20)
    assert cluster.samples() == cluster.expected()


def predict_everything(site: Site) -> Counter[str]:
    """Predicts 8 rows with every model through nginx: who answered, by status."""
    since = site.balancer.mark()
    for model in MODELS:
        answer = site.balancer.post(f"/v1/models/{model}/predict", {"inputs": rows(8, seed=3)})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 8
    time.sleep(0.2)  # nginx writes its access log line after the answer
    return site.balancer.answered(since, "/predict")


def answering(replicas: list[Replica]) -> set[str]:
    """How nginx's access log names a `200` from each of `replicas`."""
    return {f"200 {replica.host}:{replica.port}" for replica in replicas}


def test_each_host_reaches_the_shared_services_over_its_veth_and_not_the_machines(
    site: Site,
) -> None:
    for host in range(1, HOSTS + 1):
        assert site.network.connects(host, site.network.gateway, site.database_port)
        assert not site.network.connects(host, "127.0.0.1", 5432)  # the machine's own


def test_models_created_through_nginx_are_trained_two_on_each_host(site: Site) -> None:
    for model in MODELS:
        assert site.balancer.post("/v1/models", model_body(model)).status_code == 201
    took = wait_until(lambda: site.cluster.balanced(2), timeout=10, step=0.2)
    print(f"balanced over {HOSTS} hosts {took:.2f} s after the last create")
    assert sorted(len(models) for models in site.cluster.owned().values()) == [2, 2, 2]


def test_batches_streamed_through_nginx_apply_exactly_once_and_every_host_predicts(
    site: Site,
) -> None:
    since = site.balancer.mark()
    stop, threads = streaming(site, clients=2)
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(timeout=120)
    settle(site)
    assert min(site.cluster.expected().values()) >= ROWS
    fits = site.balancer.answered(since, "/partial-fit")
    predicted = predict_everything(site)
    everyone = answering(site.cluster.running())
    assert set(fits) == everyone  # nginx spread the batches over the three hosts
    assert sum(predicted.values()) == len(MODELS)
    assert set(predicted) <= everyone


def test_each_host_has_a_data_directory_of_its_own(site: Site) -> None:
    mounts = {}
    for replica in site.cluster.running():
        assert replica.process is not None
        mounts[replica.name] = mounted_at(replica.process.pid, site.data_dir)
    assert all(found and found[0] == "tmpfs" for found in mounts.values()), mounts
    assert len({found[1] for found in mounts.values() if found}) == HOSTS, mounts  # 3 devices
    assert list(site.data_dir.iterdir()) == []  # the root namespace sees none of their files


def test_a_killed_hosts_models_move_to_the_others_with_exact_counts(site: Site) -> None:
    victim = site.cluster.replicas["h2"]
    its = victim.owned()
    assert len(its) == 2
    stop, threads = streaming(site, clients=2)
    try:
        time.sleep(1)
        victim.kill()
        killed = time.monotonic()
        # the survivors hold every model's served version: they answer before any takeover
        assert set(predict_everything(site)) <= answering(site.cluster.running())
        wait_until(lambda: site.cluster.every_owned() == MODELS, timeout=LEASE_S + 5)
        print(f"{its} owned again {time.monotonic() - killed:.2f} s after the SIGKILL")
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    settle(site)
    assert set(predict_everything(site)) <= answering(site.cluster.running())
    assert sorted(len(models) for models in site.cluster.owned().values()) == [3, 3]
