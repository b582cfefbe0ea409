"""Real replicas spread the models between them and move them without losing a batch.

Nothing is shared on disk: each replica has a data directory of its own, and weights and
snapshots live in a bucket on the S3 emulator (as on separate hosts).

24 models, three replicas, then a fourth joining while four clients stream batches to every
model; then a SIGKILL, a SIGTERM with `?wait=false` batches queued, and a Redis blip. After
each step every model's `samples_seen` equals the rows of the batches it acknowledged.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import REDIS_URL
from tests.factories import model_body
from tests.stores import new_bucket
from tests.streaming.replicas import Cluster, Ledger, Replica, cluster_database, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

MODELS = [f"m{i:02d}" for i in range(24)]
ROWS, CLIENTS, LEASE_S = 4, 4, 2.0


@pytest.fixture(scope="module")
def shared(s3_endpoint: str) -> Iterator[dict[str, str]]:
    with cluster_database("balance") as database:
        yield database | {
            "GRADUAL_WEIGHTS_URL": f"s3://{new_bucket(s3_endpoint)}/weights",
            "GRADUAL_S3_ENDPOINT": s3_endpoint, "GRADUAL_S3_ACCESS_KEY_ID": "testing",
            "GRADUAL_S3_SECRET_ACCESS_KEY": "testing",
            "GRADUAL_LEASE_TTL_S": str(LEASE_S), "GRADUAL_SYNC_EVERY_S": "0.3",
            "GRADUAL_LOG_LEVEL": "info",  # the replicas' logs tell the handoffs, if a test fails
        }  # fmt: skip


@pytest.fixture(scope="module")
def cluster(shared: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("balance-logs")
    replicas = {
        n: Replica(n, shared | {"GRADUAL_DATA_DIR": str(logs / f"{n}-data")}, logs / f"{n}.log")
        for n in ("a", "b", "c", "d")
    }
    for name in ("a", "b", "c"):
        replicas[name].launch()
    try:
        assert all(replicas[n].wait_ready() for n in ("a", "b", "c"))
        yield Cluster(replicas, MODELS, Ledger(ROWS))
    finally:
        for replica in replicas.values():
            replica.kill_quietly()
            replica.stop()


def stream(cluster: Cluster, client: int, stop: threading.Event, sent: list[int]) -> None:
    n = 0
    while not stop.is_set():
        for i, model in enumerate(MODELS):
            if stop.is_set():
                break
            running = cluster.running()
            replica = running[(client + i + n) % len(running)]
            batch_id, seed = f"c{client}-{n}-{model}", n * 31 + i
            cluster.ledger.send(replica, model, batch_id, seed=seed, wait=True)
        n += 1
    sent[client] = n


def test_three_replicas_own_eight_models_each(cluster: Cluster) -> None:
    a = cluster.replicas["a"]
    for model in MODELS:
        assert a.post("/v1/models", model_body(model)).status_code == 201
    took = wait_until(lambda: cluster.balanced(8), timeout=10, step=0.2)
    print(f"balanced 3 replicas in {took:.2f} s after the last create")


def test_a_fourth_replica_takes_a_quarter_while_clients_stream_and_no_batch_is_lost(
    cluster: Cluster,
) -> None:
    stop, sent = threading.Event(), [0] * CLIENTS
    clients = [
        threading.Thread(target=stream, args=(cluster, k, stop, sent), daemon=True)
        for k in range(CLIENTS)
    ]
    for thread in clients:
        thread.start()
    try:
        time.sleep(2)
        cluster.replicas["d"].start()
        since = time.time()
        took = wait_until(lambda: cluster.balanced(6), timeout=10, step=0.2)
        print(f"balanced 4 replicas in {took:.2f} s after the join")
        time.sleep(1)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
    assert min(sent) >= 1
    assert cluster.samples() == cluster.expected()
    handoffs = cluster.replicas["a"].get("/v1/cluster")["handoffs"]
    moved = Counter(h["model"] for h in handoffs if h.get("decided", 0) >= since - 1)
    assert 6 <= sum(moved.values()) <= 12  # d's six, and a few that overflow
    assert max(moved.values()) == 1  # none moved back and forth


def test_a_killed_replicas_models_move_within_the_lease_and_counts_stay_exact(
    cluster: Cluster,
) -> None:
    victim = cluster.replicas["b"]
    its = victim.owned()
    victim.kill()
    took = wait_until(lambda: cluster.every_owned() == MODELS, timeout=LEASE_S + 5)
    print(f"{len(its)} models moved {took:.2f} s after the SIGKILL")
    for i, model in enumerate(MODELS):
        cluster.ledger.send(cluster.running()[i % 3], model, f"after-kill-{model}", i, True)
    assert cluster.samples() == cluster.expected()


def test_a_stopped_replica_hands_over_before_exit_and_queued_batches_apply_once(
    cluster: Cluster,
) -> None:
    leaving = cluster.replicas["c"]
    its = leaving.owned()
    assert its
    for n in range(10):  # queued behind one another on the owner as the stop begins
        for model in its:
            cluster.ledger.send(leaving, model, f"queued-{n}-{model}", 500 + n, wait=False)
    assert leaving.process is not None
    leaving.process.terminate()
    leaving.wait_dead()
    exited = time.time()
    took = wait_until(lambda: cluster.every_owned() == MODELS, timeout=5)
    print(f"{len(its)} models owned again {took:.2f} s after the SIGTERMed replica exited")
    records = [
        h for h in cluster.replicas["a"].get("/v1/cluster")["handoffs"] if h.get("source") == "c"
    ]
    stopped = {h["model"]: h for h in records if h["reason"] == "stopping"}
    assert sorted(stopped) == sorted(its)
    assert all(h["released"] <= exited for h in stopped.values())
    assert cluster.samples() == cluster.expected()


def test_a_redis_blip_shorter_than_the_lease_moves_nothing(cluster: Cluster) -> None:
    before = cluster.owned()
    handoffs = len(cluster.replicas["a"].get("/v1/cluster")["handoffs"])
    client = redis.Redis.from_url(REDIS_URL)
    began = time.monotonic()
    while time.monotonic() - began < LEASE_S * 0.6:  # every connection of "d", again and again
        for found in client.client_list():
            if found["name"] == "gradual:d":
                client.client_kill_filter(_id=found["id"])
        time.sleep(0.05)
    time.sleep(LEASE_S * 2.5)
    assert cluster.owned() == before
    assert len(cluster.replicas["a"].get("/v1/cluster")["handoffs"]) == handoffs
