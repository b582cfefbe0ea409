"""TorchServe 0.12 for bench/http_wrk.py, batched (batch size 64, max batch delay 5 ms, one
worker), serving bench/torchserve_handler.py's MLP on free loopback ports.

TorchServe is no dependency of Gradual: `bench/torchserve_setup` installs it into
`.venv-torchserve` (torch==2.13.0 first, as everywhere here). `executable()` finds that venv's
`torchserve`, else one on PATH, else None (then the bench says it is not installed).

The frontend (Java) and its Python worker run in a process group of their own, under a shell
that forwards SIGTERM to the group: the bench's exit, or its death, stops all of them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from bench.servers import Server, free_port, server

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-torchserve"
SETUP = Path(__file__).with_name("torchserve_setup")
HANDLER = Path(__file__).with_name("torchserve_handler.py")
MODEL = "small"
BATCH_SIZE, MAX_BATCH_DELAY_MS, WORKERS = 64, 5, 1

# Warnings and errors only, on the console (the server's log file): no access log, no
# per-request metrics lines written to disk, as Gradual runs with --log-level warning.
LOG4J = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders><Console name="STDOUT" target="SYSTEM_OUT">
    <PatternLayout pattern="%d{ISO8601} [%-5p] %t %c - %m%n"/></Console></Appenders>
  <Loggers><Root level="warn"><AppenderRef ref="STDOUT"/></Root></Loggers>
</Configuration>
"""

# Runs TorchServe in the foreground in its process group; SIGTERM stops the whole group.
LAUNCH = 'cd "$1" || exit 1; shift; trap "trap - TERM; kill -TERM -- -$$" TERM; "$@" & wait $!'


def executable() -> Path | None:
    """`.venv-torchserve`'s torchserve, else one on PATH, else None."""
    mine = VENV / "bin" / "torchserve"
    if mine.exists():
        return mine
    found = shutil.which("torchserve")
    return Path(found) if found else None


def set_up() -> Path:
    """Installs TorchServe into `.venv-torchserve` (a few minutes the first time)."""
    subprocess.run([str(SETUP)], check=True)
    found = executable()
    if found is None:
        raise RuntimeError(f"{SETUP} ran but no torchserve was found")
    return found


def archive(store: Path, binaries: Path) -> None:
    """The model directory: the handler and a manifest, no serialized model file."""
    command = [
        str(binaries / "torch-model-archiver"), "--model-name", MODEL, "--version", "1.0",
        "--handler", str(HANDLER), "--export-path", str(store), "--archive-format", "no-archive",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)


def config(store: Path, inference: int, management: int) -> str:
    ports = {
        "inference_address": f"http://127.0.0.1:{inference}",
        "management_address": f"http://127.0.0.1:{management}",
        "metrics_address": f"http://127.0.0.1:{free_port()}",
        "grpc_inference_port": str(free_port()),
        "grpc_management_port": str(free_port()),
    }
    model = {
        "defaultVersion": True, "marName": MODEL, "minWorkers": WORKERS, "maxWorkers": WORKERS,
        "batchSize": BATCH_SIZE, "maxBatchDelay": MAX_BATCH_DELAY_MS, "responseTimeout": 120,
    }  # fmt: skip
    settings = ports | {
        "disable_token_authorization": "true",
        "install_py_dep_per_model": "false",
        "enable_envvars_config": "false",
        "disable_system_metrics": "true",
        "enable_metrics_api": "false",
        "default_workers_per_model": str(WORKERS),
        "model_store": str(store),
        "load_models": MODEL,
        "models": json.dumps({MODEL: {"1.0": model}}),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


@contextmanager
def torchserve(binary: Path, *, wait: bool = True) -> Iterator[Server]:
    """TorchServe with the bench's model; ready once the model's worker is."""
    with tempfile.TemporaryDirectory(prefix="bench-torchserve-") as tmp:
        root = Path(tmp)
        (store := root / "store").mkdir()
        archive(store, binary.parent)
        inference, management = free_port(), free_port()
        (root / "config.properties").write_text(config(store, inference, management))
        (root / "log4j2.xml").write_text(LOG4J)
        command = [
            "bash", "-c", LAUNCH, "launch", tmp, str(binary), "--start", "--foreground",
            "--ncs", "--model-store", str(store), "--ts-config", str(root / "config.properties"),
            "--log-config", str(root / "log4j2.xml"),
        ]  # fmt: skip
        env = {"TEMP": tmp, "TMPDIR": tmp, "LOG_LOCATION": tmp, "METRICS_LOCATION": tmp}
        ready = partial(model_ready, management)
        started = server(
            "torchserve", command, env, "/ping", inference, wait=wait, also_ready=ready, group=True
        )
        with started as running:
            yield running


def model_ready(management: int) -> bool:
    """Whether the model's workers are all READY (/ping says Healthy before they are)."""
    url = f"http://127.0.0.1:{management}/models/{MODEL}"
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            workers = json.loads(answer.read())[0]["workers"]
    except OSError:
        return False
    return bool(workers) and all(worker["status"] == "READY" for worker in workers)
