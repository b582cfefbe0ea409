"""A real uvicorn server for the app, in a thread of the test process (torch is loaded once),
for tests that need a URL: estimators that build their own clients, pickled ones included."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from service.app import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120.0
# One process (GRADUAL_WORKERS=1) unless a test asks for more: its PID is the whole service.
QUIET = {
    "GRADUAL_DEVICE": "cpu", "GRADUAL_TORCH_THREADS": "1", "GRADUAL_LOG_LEVEL": "warning",
    "GRADUAL_WORKERS": "1",
}  # fmt: skip


def serve_process(
    port: int, settings: dict[str, str], log: Path, *, host: str | None = None,
    launcher: Sequence[str] = (),
) -> subprocess.Popen[bytes]:  # fmt: skip
    """`python -m service serve` in its own process, configured by `settings` alone (the
    test runner's own GRADUAL_* variables are not passed on), logging to `log`. `launcher`
    is a command that runs the rest of the line (e.g. `ip netns exec NAME`) and execs it, so
    that the process's pid stays the server's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUAL_")}
    bind = ["--host", host] if host else []
    argv = [*launcher, sys.executable, "-m", "service", "serve", *bind, "--port", str(port)]
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env | QUIET | settings, stdout=out, stderr=subprocess.STDOUT
        )


def answers_ready(process: subprocess.Popen[bytes], http: httpx.Client, log: Path) -> bool:
    """True once `/readyz` answers 200; False if the process died first."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while process.poll() is None:
        try:
            if http.get("/readyz", timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"not ready in {START_TIMEOUT_S} s; see {log}"
        time.sleep(0.1)
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port of `host` free right now (for a server another process starts)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """Serves the app on a free port of 127.0.0.1 (lifespan included); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
