"""`gradual serve --workers 2`: a trainer and a reader on one port, as real processes.

A reader names itself in a header: `x-gradual-reader` on what it answered,
`x-gradual-forwarded-by` on what it relayed to the trainer; the trainer adds neither. The
trainer alone also answers on its private socket (`trainer.sock` in the data dir).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from service.config import Settings
from tests.factories import labels, model_body, ndjson, numbered_batches, rows
from tests.live_server import answers_ready, free_port, serve_process

READER, FORWARDED = "x-gradual-reader", "x-gradual-forwarded-by"
# A promotion reaches the readers within 50 ms on a quiet machine; a loaded test box gets ten
# times that before this fails.
SWAP_BOUND_S = 0.5
FLOOD = 24


@dataclass
class Service:
    """`gradual serve` on `data`, with `workers` processes, on a port kept across restarts."""

    data: Path
    log: Path
    workers: int = 2
    settings: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        settings = {"GRADUAL_DATA_DIR": str(self.data), "GRADUAL_WORKERS": str(self.workers)}
        self.process = serve_process(self.port, settings | self.settings, self.log)
        with httpx.Client(base_url=self.url) as http:
            assert answers_ready(self.process, http, self.log), self.log.read_text()[-3000:]
        if self.workers > 1:
            self.reader_pid()  # the readers accept once they hold the served versions

    def reader_pid(self) -> int:
        """A reader's pid, from the first of fresh connections that lands on one."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = httpx.get(f"{self.url}/healthz")
            if READER in answer.headers:
                return int(answer.headers[READER])
            time.sleep(0.05)
        raise AssertionError(f"no reader answered; see {self.log}")

    def trainer(self) -> httpx.Client:
        """A client of the trainer alone: its private socket."""
        transport = httpx.HTTPTransport(uds=str(self.data.resolve() / "trainer.sock"))
        return httpx.Client(transport=transport, base_url="http://127.0.0.1", timeout=60)

    @contextmanager
    def pinned(self, reader: bool) -> Iterator[httpx.Client]:
        """A client whose one kept-alive connection landed on a reader (or on the trainer)."""
        for _ in range(200):
            limits = httpx.Limits(max_connections=1)
            with httpx.Client(base_url=self.url, timeout=60, limits=limits) as client:
                if (READER in client.get("/healthz").headers) == reader:
                    yield client
                    return
        raise AssertionError("no connection landed where it was asked to")

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service on one data dir for the whole module (its queues hold two batches); the
    tests that kill or stop it start it again, so each start is paid once."""
    root = tmp_path_factory.mktemp("workers")
    settings = {"GRADUAL_QUEUE_BATCHES": "2", "GRADUAL_RETRY_AFTER_S": "3"}
    running = Service(root / "data", root / "serve.log", settings=settings)
    yield running
    if running.process is not None:
        running.stop()


@pytest.fixture
def service(started: Service) -> Service:
    """The module's service, running with a trainer and one reader."""
    if started.process is None or started.process.poll() is not None or started.workers != 2:
        if started.process is not None:
            started.stop()
        started.workers = 2
        started.start()
    return started


def create(url: str, name: str, **training: Any) -> None:
    answer = httpx.post(f"{url}/v1/models", json=model_body(name, training=training), timeout=60)
    assert answer.status_code == 201, answer.text


def fit(http: httpx.Client, name: str, batch: dict[str, Any]) -> httpx.Response:
    return http.post(f"/v1/models/{name}/partial-fit", json=batch)


def on_fresh_connections(
    url: str, send: Callable[[httpx.Client], httpx.Response], n: int
) -> list[httpx.Response]:
    """`n` answers, each over a new connection (the kernel picks the process)."""
    answers = []
    for _ in range(n):
        with httpx.Client(base_url=url, timeout=60) as http:
            answers.append(send(http))
    return answers


def test_a_readers_predictions_equal_the_trainers_bit_for_bit(service: Service) -> None:
    create(service.url, "same")
    with service.trainer() as trainer:
        for batch in numbered_batches(3, rows=32, seed=1, prefix="s"):
            assert fit(trainer, "same", batch).status_code == 200
        version = trainer.post("/v1/models/same/versions").json()["version"]
        assert trainer.post("/v1/models/same/promote", json={"version": version}).is_success
        body = {"inputs": rows(8, seed=2)}
        expected = trainer.post("/v1/models/same/predict", json=body)
    with service.pinned(reader=True) as reader:
        deadline = time.monotonic() + 5
        while (answer := reader.post("/v1/models/same/predict", json=body)).json()[
            "version"
        ] != version:
            assert time.monotonic() < deadline
        assert READER in answer.headers
    assert answer.content == expected.content  # the same float32 values, written the same way
    assert answer.json()["version"] == version


def test_batches_sent_to_any_process_are_trained_exactly_once(service: Service) -> None:
    create(service.url, "once")
    batches = numbered_batches(12, rows=16, seed=3, prefix="o")
    answers, resent = [], []
    for batch in batches:
        with httpx.Client(base_url=service.url, timeout=60) as http:
            answers.append(fit(http, "once", batch))
        with httpx.Client(base_url=service.url, timeout=60) as http:
            resent.append(fit(http, "once", batch))
    assert [a.status_code for a in answers + resent] == [200] * 24
    assert [a.json()["duplicate"] for a in answers] == [False] * 12
    assert [a.json()["duplicate"] for a in resent] == [True] * 12
    assert any(FORWARDED in a.headers for a in answers + resent), "no batch went via a reader"
    model = httpx.get(f"{service.url}/v1/models/once").json()
    assert (model["samples_seen"], model["step"]) == (12 * 16, 12)


def test_an_ndjson_stream_through_a_reader_is_relayed_line_by_line(service: Service) -> None:
    create(service.url, "lines")
    batches = numbered_batches(5, rows=16, seed=10, prefix="l")

    def slowly() -> Iterator[bytes]:  # a body that arrives over time, as a client streams it
        for batch in batches:
            yield ndjson([batch])
            time.sleep(0.02)

    with service.pinned(reader=True) as reader:
        answer = reader.post(
            "/v1/models/lines/partial-fit", content=slowly(),
            headers={"content-type": "application/x-ndjson"},
        )  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert FORWARDED in answer.headers
    *lines, summary = [json.loads(line) for line in answer.text.splitlines()]
    assert "summary" in summary
    assert [line["batch_id"] for line in lines] == [b["batch_id"] for b in batches]
    assert lines[-1]["samples_seen"] == 5 * 16


def test_the_default_is_the_machines_cores_up_to_the_cap() -> None:
    cores = os.cpu_count() or 1
    assert Settings(max_workers=64).serving_processes() == min(cores, 64)
    assert Settings(max_workers=1).serving_processes() == 1
    assert Settings(workers=3, max_workers=1).serving_processes() == 3
    assert Settings(database_url="sqlite://", max_workers=64).serving_processes() == 1


def test_more_than_one_process_on_an_in_memory_database_is_refused() -> None:
    with pytest.raises(ValidationError, match="in-memory SQLite"):
        Settings(database_url="sqlite:///:memory:", workers=2)


def test_a_full_queue_answers_429_with_retry_after_through_a_reader(service: Service) -> None:
    create(service.url, "flood")
    batches = numbered_batches(FLOOD, rows=512, seed=4, prefix="f")
    barrier = threading.Barrier(FLOOD)

    def post(batch: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            barrier.wait()
            return fit(http, "flood", batch)

    with ThreadPoolExecutor(FLOOD) as pool:
        answers = list(pool.map(post, batches))
    relayed = [a for a in answers if a.status_code == 429 and FORWARDED in a.headers]
    assert relayed, sorted((a.status_code, FORWARDED in a.headers) for a in answers)
    assert {a.json()["code"] for a in relayed} == {"queue_full"}
    assert {a.headers["retry-after"] for a in relayed} == {"3"}
    trained = sum(a.status_code == 200 for a in answers)
    model = httpx.get(f"{service.url}/v1/models/flood").json()
    assert model["samples_seen"] == trained * 512


def test_promotions_and_rollbacks_reach_a_reader_within_the_bound(service: Service) -> None:
    create(service.url, "swap")
    with service.trainer() as trainer:
        fit(trainer, "swap", {"inputs": rows(16, seed=5), "targets": labels(16, seed=5)})
        second = trainer.post("/v1/models/swap/versions").json()["version"]
        moves = [("promote", second), ("rollback", 1)] * 5
        body = {"inputs": rows(1, seed=6)}
        with service.pinned(reader=True) as reader:
            delays = []
            for command, version in moves:
                answer = trainer.post(f"/v1/models/swap/{command}", json={"version": version})
                assert answer.status_code == 200, answer.text
                done = time.perf_counter()
                while reader.post("/v1/models/swap/predict", json=body).json()["version"] != (
                    version
                ):
                    assert time.perf_counter() - done < 5, f"{command} v{version} not seen"
                delays.append(time.perf_counter() - done)
    print(
        f"\nswap seen by a reader: p50 {statistics.median(delays) * 1000:.1f} ms, "
        f"max {max(delays) * 1000:.1f} ms over {len(delays)} promotions and rollbacks"
    )
    assert max(delays) < SWAP_BOUND_S


def test_metrics_add_up_the_predictions_of_every_process(service: Service) -> None:
    create(service.url, "counted")

    def predictions(text: str) -> float:
        line = 'gradual_http_requests_total{method="POST",route="/v1/models/{name}/predict",'
        return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))

    with service.trainer() as trainer:
        before = predictions(trainer.get("/metrics").text)
    body = {"inputs": rows(1, seed=7)}
    answers: list[httpx.Response] = []
    # the kernel picks the accepting process: fresh connections until both answered some
    while len(answers) < 300 and len({READER in a.headers for a in answers}) < 2:
        answers += on_fresh_connections(
            service.url, lambda http: http.post("/v1/models/counted/predict", json=body), 10
        )
    assert {a.status_code for a in answers} == {200}
    assert len({READER in a.headers for a in answers}) == 2, "both processes answered some"
    with service.pinned(reader=True) as reader:  # a reader's /metrics: the trainer's sum
        assert predictions(reader.get("/metrics").text) - before == len(answers)
    with service.trainer() as trainer:
        assert predictions(trainer.get("/metrics").text) - before == len(answers)


def test_a_reader_that_dies_is_replaced_by_another(service: Service) -> None:
    first = service.reader_pid()
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (pid := service.reader_pid()) == first:  # its last answers may still be in flight
        assert time.monotonic() < deadline
    assert pid != first
    assert not alive(first)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_killed_trainer_takes_its_readers_and_a_restart_recovers(service: Service) -> None:
    reader = service.reader_pid()
    create(service.url, "k")
    batches = numbered_batches(8, rows=16, seed=8, prefix="k")
    answers = on_fresh_connections(service.url, lambda h: fit(h, "k", batches.pop()), 8)
    assert {a.status_code for a in answers} == {200}
    assert service.process is not None
    service.process.kill()
    service.process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while alive(reader):
        assert time.monotonic() < deadline, f"reader {reader} outlived its trainer"
        time.sleep(0.05)
    service.start()  # the same port: nobody holds it any more
    model = httpx.get(f"{service.url}/v1/models/k").json()
    assert (model["samples_seen"], model["step"]) == (8 * 16, 8)


def test_sigterm_drains_exits_0_and_keeps_every_acknowledged_batch(service: Service) -> None:
    readers = {service.reader_pid()}
    create(service.url, "t")
    batches = numbered_batches(40, rows=64, seed=9, prefix="t")
    acknowledged: list[str] = []

    def stream(part: list[dict[str, Any]]) -> None:
        for batch in part:
            try:
                with httpx.Client(base_url=service.url, timeout=60) as http:
                    answer = fit(http, "t", batch)
            except httpx.TransportError:
                return  # the port closed: the stop has begun
            if answer.status_code == 200:
                acknowledged.append(batch["batch_id"])

    senders = [threading.Thread(target=stream, args=(batches[i::4],)) for i in range(4)]
    for sender in senders:
        sender.start()
    time.sleep(1.0)
    assert service.stop() == 0
    for sender in senders:
        sender.join(timeout=60)
    assert acknowledged
    assert not any(alive(pid) for pid in readers)
    service.workers = 1
    service.start()
    model = httpx.get(f"{service.url}/v1/models/t").json()
    assert model["samples_seen"] >= len(acknowledged) * 64
    again = [b for b in batches if b["batch_id"] in acknowledged]
    resent = on_fresh_connections(service.url, lambda h: fit(h, "t", again.pop()), len(again))
    assert all(a.json()["duplicate"] for a in resent)
    assert all(READER not in a.headers and FORWARDED not in a.headers for a in resent)
    assert children(service) == []  # --workers 1 starts no reader


def children(service: Service) -> list[int]:
    assert service.process is not None
    parent = service.process.pid
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def test_a_reader_relays_the_bearer_token_and_the_trainers_refusals(
    tmp_path: Path,
) -> None:
    tokens = {"read": "r-" + "1" * 30, "admin": "a-" + "2" * 30}
    settings = {"GRADUAL_API_TOKENS": ",".join(f"{s}={t}" for s, t in tokens.items())}
    guarded = Service(tmp_path / "data", tmp_path / "serve.log", settings=settings)
    guarded.start()
    try:
        admin = {"authorization": f"Bearer {tokens['admin']}"}
        reader = {"authorization": f"Bearer {tokens['read']}"}

        def relayed(headers: dict[str, str]) -> httpx.Response:
            """A create answered by the trainer through a reader (a new name each time: one
            the trainer answered directly may have created its model)."""
            for attempt in range(200):
                body = model_body(f"guarded-{attempt}")
                answer = httpx.post(f"{guarded.url}/v1/models", json=body, headers=headers)
                if FORWARDED in answer.headers:
                    return answer
            raise AssertionError("no create went through a reader")

        anonymous = relayed({})
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        assert relayed(reader).status_code == 403
        assert relayed(admin).status_code == 201  # creating a model takes the admin scope
    finally:
        assert guarded.stop() == 0
