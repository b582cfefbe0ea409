"""`gradual demo`: a guided tour on scikit-learn's bundled digits.

Starts the service on the embedded default (or uses one at --url), creates a model, streams
the data in mini-batches until early stopping stops it, then streams corrupted labels until
the service rolls the head back; prints the versions and writes a PNG of the curves.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.client import Event, FitResult, GradualClient, GradualClientError
from service.extras import require
from service.kinds import EventKind

require("sklearn", "matplotlib", extra="demo", purpose="the demo")
from sklearn.datasets import load_digits  # noqa: E402

NAME = "demo-digits"
BATCH = 64
SPEC = {"task": "classification", "inputs": 64, "outputs": 10, "hidden": [64]}
TRAINING = {"batch_size": 32, "holdout": 0.2, "eval_every": 6, "patience": 4,
            "buffer_size": 400, "rollback_tolerance": 0.2}  # fmt: skip


@contextlib.contextmanager
def service_at(url: str | None) -> Iterator[str]:
    """`url` if a service answers there; else a fresh one on a temporary data directory."""
    if url is not None:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="gradual-demo-") as data:
        port = _free_port()
        env = os.environ | {"GRADUAL_DATA_DIR": data, "GRADUAL_LOG_LEVEL": "warning"}
        # one process: the demo trains one model for one client
        command = [sys.executable, "-m", "service", "serve", "--port", str(port), "--workers", "1"]
        process = subprocess.Popen(command, env=env)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(base, process)
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


def run(url: str | None, output: Path, console: Console) -> None:
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order].astype(np.float32), y[order]
    with (
        service_at(url) as base,
        GradualClient(base) as client,
        httpx.Client(base_url=base) as http,
    ):
        with contextlib.suppress(GradualClientError):
            client.delete(NAME)
        client.create(NAME, SPEC, optimizer={"name": "adam", "lr": 0.003}, training=TRAINING)
        console.print(f"[bold]1.[/] streaming digits into [cyan]{NAME}[/] until it stops early")
        _learn_until_stopped(client, x, y, console)
        console.print("[bold]2.[/] streaming corrupted labels: the service must roll back")
        http.post(f"/v1/models/{NAME}/resume").raise_for_status()
        corrupted = np.random.default_rng(1).permutation(y)
        _stream_until(client, x, corrupted, console, stop_on="rollback")
        _print_versions(client, console)
        _plot(http.get(f"/v1/models/{NAME}/history").raise_for_status().json(), output)
        console.print(f"learning curves written to [green]{output}[/]")


def _learn_until_stopped(
    client: GradualClient, x: np.ndarray, y: np.ndarray, console: Console
) -> None:
    for _ in range(30):  # passes over the data
        if _stream_until(client, x, y, console, stop_on="stopped"):
            model = client.get(NAME)
            console.print(
                f"   early stop ([yellow]{model.stopping_reason}[/]) at step {model.step}; "
                f"serving v{model.served_version}, best val_loss {model.best_metric:.4f}"
            )
            return


def _stream_until(
    client: GradualClient,
    x: np.ndarray,
    y: np.ndarray,
    console: Console,
    *,
    stop_on: EventKind | Literal["stopped"],
) -> bool:
    """One pass in mini-batches; True as soon as the model stops, or a `stop_on` event."""
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    since = max((e.id for e in client.events(NAME)), default=0)
    started, best = time.perf_counter(), client.get(NAME).best_metric
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=len(x))
        for number, start in enumerate(range(0, len(x), BATCH)):
            answer = client.partial_fit(NAME, x[start : start + BATCH], y[start : start + BATCH])
            if number % 8 == 7:
                best = client.get(NAME).best_metric
            progress.update(task, advance=BATCH, description=_status(answer, best, start, started))
            if stop_on == "stopped" and answer.state == "stopped":
                return True
            if stop_on != "stopped" and (event := _first(client, since, stop_on)) is not None:
                reason = event.data.get("reason")
                console.print(f"   {stop_on}: {reason} (head back to v{event.version})")
                return True
    return False


def _status(answer: FitResult, best: float | None, start: int, started: float) -> str:
    rate = (start + BATCH) / (time.perf_counter() - started)
    loss = f"{answer.train_loss:.3f}" if answer.train_loss is not None else "-"
    val = f"{best:.3f}" if best is not None else "-"
    return f"{rate:7.0f} samples/s  train loss {loss}  best val loss {val}  {answer.state}"


def _first(client: GradualClient, since: int, kind: EventKind) -> Event | None:
    return next((e for e in client.events(NAME, since=since) if e.kind == kind), None)


def _print_versions(client: GradualClient, console: Console) -> None:
    table = Table("version", "step", "samples", "val_loss", "val_accuracy", "reason", "served")
    for v in client.versions(NAME)[-8:]:
        table.add_row(
            str(v.version), str(v.step), str(v.samples_seen),
            _fmt(v.metrics.get("val_loss")), _fmt(v.metrics.get("val_accuracy")), v.reason,
            "●" if v.served else "",
        )  # fmt: skip
    console.print("the newest versions:", table)


def _fmt(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def _plot(history: dict[str, object], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = history["points"]
    markers = history["markers"]
    assert isinstance(points, list)
    assert isinstance(markers, list)
    steps = [p["step"] for p in points]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    axis.plot(steps, [p.get("train_loss") for p in points], label="train loss")
    axis.plot(steps, [p.get("val_loss") for p in points], label="validation loss")
    colours = {"rollback": "crimson", "early_stop": "orange", "drift": "purple", "resume": "teal"}
    for kind, colour in colours.items():
        xs = [m["step"] for m in markers if m["kind"] == kind and m["step"] is not None]
        for i, step in enumerate(xs):
            axis.axvline(step, color=colour, linestyle="--", label=kind if i == 0 else None)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title("Gradual demo: digits, then corrupted labels")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the service did not become ready in 60 s")
