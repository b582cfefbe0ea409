"""SIGTERM, as `docker compose stop` sends it to PID 1: a real `gradual serve` process stops
taking connections, finishes the requests and queued batches in flight, snapshots, exits 0
in bounded time, and after a restart every acknowledged batch is there without replay."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.stackfiles import ROOT
from tests.factories import labels, model_body, rows
from tests.live_server import free_port

pytestmark = pytest.mark.slow
ROWS = 16
STOP_BOUND_S = 30.0  # uvicorn's graceful timeout; compose allows 60 s before SIGKILL
NDJSON = {"content-type": "application/x-ndjson"}


class Server:
    """`python -m service serve` on a data directory, as the image runs it (PID 1 there)."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data, self.log = data, log
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.clients: list[httpx.Client] = []

    def start(self) -> httpx.Client:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUAL_")} | {
            "GRADUAL_DATA_DIR": str(self.data), "GRADUAL_DEVICE": "cpu",
            "GRADUAL_TORCH_THREADS": "1", "GRADUAL_LOG_LEVEL": "info", "GRADUAL_WORKERS": "1",
        }  # fmt: skip
        self.log.write_bytes(b"")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve", "--port", str(port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=self.url, timeout=60)
        self.clients.append(client)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if client.get("/readyz", timeout=2).status_code == 200:
                    return client
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.log.read_text()[-3000:]}")

    def terminate(self) -> float:
        """Sends SIGTERM; returns the monotonic time it was sent."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return time.monotonic()

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait(timeout=STOP_BOUND_S + 15)

    def kill(self) -> None:
        for client in self.clients:
            client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data", tmp_path / "server.log")
    yield running
    running.kill()


def _batch(index: int) -> dict[str, Any]:
    return {
        "inputs": rows(ROWS, seed=index),
        "targets": labels(ROWS, seed=index),
        "batch_id": f"b{index}",
    }


def _lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def _resend(client: httpx.Client, count: int) -> dict[str, Any]:
    body = "".join(json.dumps(_batch(i)) + "\n" for i in range(count))
    answer = client.post("/v1/models/m/partial-fit", content=body, headers=NDJSON)
    assert answer.status_code == 200, answer.text
    summary: dict[str, Any] = _lines(answer)[-1]["summary"]
    return summary


class Terminator(threading.Thread):
    """SIGTERMs the server once the stream is under way, then tries a new connection."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.streaming = threading.Event()
        self.sent_at = 0.0
        self.new_connection = ""  # what a connection attempt after the signal met

    def run(self) -> None:
        self.streaming.wait(timeout=60)
        self.sent_at = self.server.terminate()
        time.sleep(0.5)
        try:
            httpx.get(f"{self.server.url}/healthz", timeout=1)
            self.new_connection = "accepted"
        except httpx.TransportError as exc:
            self.new_connection = type(exc).__name__


def test_sigterm_finishes_queued_and_streamed_batches_exits_0_and_loses_none(
    server: Server,
) -> None:
    client = server.start()
    created = client.post("/v1/models", json=model_body("m", training={"eval_every": 10}))
    assert created.status_code == 201
    queued, streamed = 20, 60  # b0..b19 queued with wait=false, then b20..b79 in one stream
    for index in range(queued):
        answer = client.post("/v1/models/m/partial-fit?wait=false", json=_batch(index))
        assert answer.status_code == 202, answer.text
    terminator = Terminator(server)
    terminator.start()

    def body() -> Iterator[bytes]:
        for index in range(queued, queued + streamed):
            if index == queued + 10:
                terminator.streaming.set()
            yield (json.dumps(_batch(index)) + "\n").encode()
            time.sleep(0.05)  # a live producer: the stream outlasts the signal by ~2 s

    answer = client.post("/v1/models/m/partial-fit", content=body(), headers=NDJSON)
    assert answer.status_code == 200, answer.text
    *progress, last = _lines(answer)
    assert server.wait() == 0
    stopped_in = time.monotonic() - terminator.sent_at
    terminator.join(timeout=10)
    assert terminator.new_connection == "ConnectError", "a connection was taken after SIGTERM"
    assert stopped_in < STOP_BOUND_S
    acknowledged = [line["batch_id"] for line in progress if "step" in line]
    assert acknowledged == [f"b{i}" for i in range(queued, queued + streamed)]
    assert last["summary"]["trained"] == streamed * ROWS

    client = server.start()
    model = client.get("/v1/models/m").json()
    total = queued + streamed
    assert (model["samples_seen"], model["step"]) == (total * ROWS, last["summary"]["step"])
    assert "replayed" not in server.log.read_text()  # drained and snapshotted at the stop
    assert _resend(client, total)["duplicates"] == total
