"""Predict and partial-fit measured with wrk (a C load generator): Gradual, a lean and a naive
hand-written FastAPI handler (bench/handlers_server.py) and, when installed, TorchServe 0.12
batched (bench/torchserve.py), on the same MLP and the same bodies, in one run.

    python -m bench.http_wrk [--runs 3] [--seconds 8] [--before /path/to/main/checkout]
    python -m bench.http_wrk --torchserve     (installs TorchServe into .venv-torchserve first)
    python -m bench.http_wrk --flatness-minutes 10      (16 connections, minute by minute)

Predict: one-row JSON bodies (float32 values as `tolist()` writes them) at 1, 16 and 64
connections (`wrk -t1`): requests/s, p50 and p99, the server's CPU (cores). Partial-fit: one
connection posting 256-row bodies, JSON and `.npy` (the naive handler takes JSON only), and
`.npy` at two connections (a client keeping two batches in flight), as samples/s ÷ the raw
training loop measured in this process in the same run. Gradual's model
for partial-fit has holdout 0, no rounds, no replay and one step a batch (the raw loop's
work). Each figure is the median of `--runs` interleaved runs; `--before` adds a second
Gradual, its code from another checkout (e.g. main's), for a before/after in the same run.
TorchServe (batch size 64, max batch delay 5 ms, one worker; the Java frontend's and the
Python worker's CPU counted) answers predict only; it is measured when `.venv-torchserve`
(bench/torchserve_setup) or a `torchserve` on PATH is there. `--workers N` (default 2)
adds `gradual serve --workers N` (named gradual-wN) beside the one-process service; its CPU
is the trainer's and its readers'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from bench import reference
from bench.common import (
    SMALL,
    Options,
    Rate,
    Row,
    dataset,
    median,
    model_body,
    npy_fit_bodies,
    options,
    report,
)
from bench.partial_fit import TRAINING_ONLY
from bench.servers import Server, gradual, handlers
from bench.torchserve import executable, set_up, torchserve
from bench.wire import JSON, NPY, Connection

SCRIPT = Path(__file__).with_name("wrk_bodies.lua")
TORCHSERVE = "torchserve"
REFERENCES = ("lean", "naive", TORCHSERVE)  # the servers Gradual is compared with
BATCH = 256
BODIES = 64  # distinct bodies of each kind, posted in turn


@dataclass(frozen=True)
class Load:
    """One wrk run: requests/s, p50 and p99 (s), the server's CPU (cores), the load average."""

    rate: float
    p50: float
    p99: float
    cores: float
    load: float


@dataclass(frozen=True)
class Target:
    """A server and its routes; `fit` None: predict only; `npy`: whether it reads `.npy`."""

    name: str
    server: Server
    predict: str
    fit: str | None
    npy: bool = True


@dataclass(frozen=True)
class Bodies:
    """Directories of body files, one per kind."""

    predict: Path
    fit_json: Path
    fit_npy: Path


def extend(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--before", help="a checkout of the service to measure beside this one")
    parser.add_argument("--connections", default="1,16,64", help="predict connection counts")
    parser.add_argument(
        "--flatness-minutes", type=int, default=0, metavar="M",
        help="instead: predict at 16 connections for M minutes, minute by minute (not in CI)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=2, metavar="N",
        help="also measure `gradual serve --workers N` beside the one-process service (<2: not)",
    )  # fmt: skip
    parser.add_argument(
        "--gradual-arg", action="append", default=[], metavar="ARG",
        help="an extra argument for `gradual serve` (repeatable; e.g. --gradual-arg=--workers=2)",
    )  # fmt: skip
    parser.add_argument(
        "--torchserve", action="store_true",
        help="install TorchServe into .venv-torchserve first if it is not there (minutes)",
    )  # fmt: skip


def write_bodies(directory: Path, bodies: Sequence[bytes]) -> Path:
    directory.mkdir()
    for index, body in enumerate(bodies):
        (directory / f"{index}.body").write_bytes(body)
    return directory


def make_bodies(root: Path) -> Bodies:
    x, y = dataset(BODIES * BATCH, seed=3)
    x32 = x.astype(np.float32)  # float32 values, as a client's tolist() of them writes them
    rows = [orjson.dumps({"inputs": [row]}) for row in x32[:BODIES].tolist()]
    fits = [
        orjson.dumps({"inputs": x32[i : i + BATCH].tolist(), "targets": y[i : i + BATCH].tolist()})
        for i in range(0, BODIES * BATCH, BATCH)
    ]
    return Bodies(
        write_bodies(root / "predict", rows),
        write_bodies(root / "fit-json", fits),
        write_bodies(root / "fit-npy", npy_fit_bodies(BODIES, BATCH, seed=3)),
    )


def wrk(
    server: Server, path: str, kind: str, bodies: Path, connections: int, seconds: float
) -> Load:
    """One wrk run against `server`; refuses a run with any error or non-2xx answer."""
    url = f"http://127.0.0.1:{server.port}"
    duration = f"{max(1, round(seconds))}s"
    count = str(len(list(bodies.iterdir())))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}", "--timeout", "10s", "-s"]
    command += [str(SCRIPT), url, "--", path, kind, str(bodies), count]
    cpu, start = server.cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - start
    used = server.cpu_seconds() - cpu
    figures = json.loads([ln for ln in done.stdout.splitlines() if ln.startswith("{")][-1])
    if figures["non2xx"] or figures["socket_errors"] or not figures["requests"]:
        raise RuntimeError(f"{server.name} {path}: {figures}; {server.log.read_text()[-1500:]}")
    return Load(
        figures["requests"] / (figures["duration_us"] / 1e6), figures["p50_us"] / 1e6,
        figures["p99_us"] / 1e6, used / elapsed, os.getloadavg()[0],
    )  # fmt: skip


async def create_models(port: int) -> None:
    connection = await Connection.open(port)
    try:
        await connection.post("/v1/models", model_body("small", SMALL, training={}))
        await connection.post("/v1/models", model_body("train", SMALL, training=TRAINING_ONLY))
    finally:
        await connection.close()


@contextmanager
def targets(opts: Options) -> Iterator[list[Target]]:
    """Every server of the run, booting at once; Gradual's models created."""
    with ExitStack() as stack:
        lean = stack.enter_context(handlers("lean", SMALL, wait=False))
        naive = stack.enter_context(handlers("naive", SMALL, wait=False))
        binary = set_up() if opts.args.torchserve and executable() is None else executable()
        batched = None if binary is None else stack.enter_context(torchserve(binary, wait=False))
        extra = opts.args.gradual_arg
        services = [stack.enter_context(gradual(opts, wait=False, extra=extra))]
        workers = opts.args.workers
        if workers > 1:
            several = gradual(
                opts, name=f"gradual-w{workers}", wait=False, extra=extra,
                env={"GRADUAL_WORKERS": str(workers)},
            )  # fmt: skip
            services.append(stack.enter_context(several))
        if opts.args.before:
            before = gradual(opts, checkout=opts.args.before, name="before", wait=False)
            services.append(stack.enter_context(before))
        reference.warm_up(training=True)
        found = []
        for running in services:
            running.wait_ready()
            wait_for_readers(running)
            asyncio.run(create_models(running.port))
            fit = "/v1/models/train/partial-fit"
            found.append(Target(running.name, running, "/v1/models/small/predict", fit))
        for running in (lean, naive):
            running.wait_ready()
        found.append(Target("lean", lean, "/predict", "/partial-fit"))
        found.append(Target("naive", naive, "/predict", "/partial-fit", npy=False))
        if batched is not None:
            batched.wait_ready(timeout=120)
            found.append(Target(TORCHSERVE, batched, "/predictions/small", None))
        yield found


def wait_for_readers(running: Server, timeout: float = 120.0) -> None:
    """For `--workers N`: until a reader answers (they accept once their models are loaded)."""
    if "-w" not in running.name:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/healthz") as answer:
            if answer.headers.get("x-gradual-reader"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{running.name}: no reader answered in {timeout:.0f} s")


@dataclass
class Figures:
    """Every run's loads, keyed by (server, what), and the raw references."""

    loads: dict[tuple[str, str], list[Load]]
    raw_fit: list[Rate]  # samples/s (and per CPU-s) of the raw training loop
    raw_forward: list[float]  # seconds of one forward pass at batch 1

    def add(self, server: str, what: str, load: Load) -> None:
        self.loads.setdefault((server, what), []).append(load)

    def rate(self, server: str, what: str) -> float:
        return median([load.rate for load in self.loads[(server, what)]])

    def median_of(self, server: str, what: str, attribute: str) -> float:
        return median([getattr(load, attribute) for load in self.loads[(server, what)]])


def one_run(found: Sequence[Target], bodies: Bodies, opts: Options, figures: Figures) -> None:
    seconds = opts.seconds
    for connections in opts.args.connection_counts:
        for target in found:
            load = wrk(target.server, target.predict, JSON, bodies.predict, connections, seconds)
            figures.add(target.name, f"predict {connections}", load)
    for target in found:  # the raw loop beside each server's figures: drift hits both alike
        if target.fit is None:
            continue
        figures.raw_fit.append(reference.train_rate(SMALL, batch=BATCH, seconds=seconds))
        load = wrk(target.server, target.fit, JSON, bodies.fit_json, 1, seconds)
        figures.add(target.name, "fit json", load)
        if target.npy:
            load = wrk(target.server, target.fit, NPY, bodies.fit_npy, 1, seconds)
            figures.add(target.name, "fit npy", load)
            # A client with two batches in flight: the next is read while one trains.
            load = wrk(target.server, target.fit, NPY, bodies.fit_npy, 2, seconds)
            figures.add(target.name, "fit npy 2", load)
    figures.raw_forward.append(reference.forward_seconds(SMALL, batch=1, seconds=min(seconds, 2)))


def measure(opts: Options) -> tuple[list[Row], list[str]]:
    figures = Figures({}, [], [])
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp, targets(opts) as found:
        bodies = make_bodies(Path(tmp))
        for _ in range(opts.runs):
            one_run(found, bodies, opts, figures)
    names = [target.name for target in found]
    return rows(figures, names, opts.args.connection_counts), notes(figures, opts)


def rows(figures: Figures, names: Sequence[str], connections: Sequence[int]) -> list[Row]:
    found = [row for c in connections for name in names for row in _predict_rows(figures, name, c)]
    services = [name for name in names if name not in REFERENCES]
    top = max(connections)
    for name in services:
        found.append(_ratio_row(figures, name, "lean", top, "≥ 1.5"))
        if TORCHSERVE in names:
            found.append(_ratio_row(figures, name, TORCHSERVE, top, "≥ 1.0"))
        if 1 in connections:
            found.append(_latency_row(figures, name))
    lean_fit = _fit_ratio(figures, "lean", "fit json")
    for name in (name for name in names if (name, "fit json") in figures.loads):
        target = f"≥ lean's {lean_fit:.2f}" if name in services else "-"
        found.append(_fit_row(figures, name, "fit json", target))
        if (name, "fit npy") in figures.loads:
            found.append(_fit_row(figures, name, "fit npy", "≥ 0.80" if name in services else "-"))
            found.append(_fit_row(figures, name, "fit npy 2", "-"))
    return found


def _predict_rows(figures: Figures, name: str, connections: int) -> list[Row]:
    what = f"predict {connections}"
    rate, naive = figures.rate(name, what), figures.rate("naive", what)
    p50, p99 = (figures.median_of(name, what, key) * 1e3 for key in ("p50", "p99"))
    cores = figures.median_of(name, what, "cores")
    service = name not in REFERENCES
    return [
        Row(
            f"predict, {connections} connection(s), 1 row, {name} / naive",
            f"{rate:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.1f} ms",
            f"server CPU {cores:.2f} cores, {cores / rate * 1e6:,.0f} µs/req; naive {naive:,.0f}",
            rate / naive,
            "≥ 3" if service and connections == 64 else "-",
        )
    ]


def _ratio_row(figures: Figures, name: str, other: str, connections: int, target: str) -> Row:
    what = f"predict {connections}"
    rate, theirs = figures.rate(name, what), figures.rate(other, what)
    return Row(
        f"predict, {connections} connections, {name} / {other}",
        f"{rate:,.0f} req/s",
        f"{other} {theirs:,.0f} req/s",
        rate / theirs,
        target,
    )


def _latency_row(figures: Figures, name: str) -> Row:
    p50 = figures.median_of(name, "predict 1", "p50")
    forward = median(figures.raw_forward)
    return Row(
        f"predict p50, 1 connection, {name}, minus the raw forward",
        f"p50 {p50 * 1e3:.2f} ms",
        f"raw forward b1 {forward * 1e3:.3f} ms",
        (p50 - forward) * 1e3,
        "≤ 0.7 ms",
        "ms",
    )


def _fit_ratio(figures: Figures, name: str, what: str) -> float:
    return figures.rate(name, what) * BATCH / median([raw.wall for raw in figures.raw_fit])


def _fit_row(figures: Figures, name: str, what: str, target: str) -> Row:
    samples = figures.rate(name, what) * BATCH
    cores = figures.median_of(name, what, "cores")
    raw = median([r.wall for r in figures.raw_fit])
    per_cpu = samples / max(cores, 1e-9) / median([r.cpu for r in figures.raw_fit])
    connections = what.split()[2] if len(what.split()) > 2 else "1"
    return Row(
        f"partial-fit {what.split()[1]} b{BATCH}, {connections} connection(s), {name} / raw loop",
        f"{samples:,.0f} samples/s",
        f"raw loop {raw:,.0f}; server CPU {cores:.2f} cores",
        samples / raw,
        target,
        cpu=per_cpu,
    )


def notes(figures: Figures, opts: Options) -> list[str]:
    loads = [load.load for runs in figures.loads.values() for load in runs]
    measured = any(server == TORCHSERVE for server, _ in figures.loads)
    torchserve = (
        "TorchServe 0.12 batched (batch size 64, max batch delay 5 ms, 1 worker): predict only"
        if measured
        else "TorchServe: not installed, not measured (bench/torchserve_setup, or --torchserve)"
    )
    return [
        f"median of {opts.runs} interleaved run(s) of {max(1, round(opts.seconds))} s each "
        f"(wrk -t1); 1-minute load average {min(loads):.2f} to {max(loads):.2f} during the run",
        torchserve,
    ]


def flatness(opts: Options, minutes: int) -> tuple[list[Row], list[str]]:
    """Predict at 16 connections on one Gradual for `minutes` one-minute wrk runs back to
    back: does throughput hold with uptime? (last minute ÷ first)"""
    loads: list[Load] = []
    extra = opts.args.gradual_arg
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp, gradual(opts, extra=extra) as one:
        asyncio.run(create_models(one.port))
        bodies = make_bodies(Path(tmp))
        for _ in range(minutes):
            loads.append(wrk(one, "/v1/models/small/predict", JSON, bodies.predict, 16, 60))
    found = [
        Row(f"predict, 16 connections, minute {i + 1}", f"{load.rate:,.0f} req/s",
            f"{load.cores / load.rate * 1e6:,.0f} µs CPU/req; load {load.load:.1f}",
            load.rate / loads[0].rate, "-", cpu=_per_cpu(load) / _per_cpu(loads[0]))
        for i, load in enumerate(loads)
    ]  # fmt: skip
    last = loads[-1].rate / loads[0].rate
    per_cpu = _per_cpu(loads[-1]) / _per_cpu(loads[0])
    found.append(
        Row("predict, 16 connections, last minute / first", "", "", last, "≥ 0.95", cpu=per_cpu)
    )
    return found, ["one server, one-minute wrk runs back to back (wrk -t1 -c16)"]


def _per_cpu(load: Load) -> float:
    """Requests per server CPU-second."""
    return load.rate / max(load.cores, 1e-9)


def main() -> None:
    opts = options(__doc__ or "", runs=3, seconds=8.0, extend=extend)
    opts.args.connection_counts = [int(c) for c in opts.args.connections.split(",") if c]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    reference.one_thread()
    if opts.args.flatness_minutes:
        found, remarks = flatness(opts, opts.args.flatness_minutes)
    else:
        found, remarks = measure(opts)
    report("Predict and partial-fit under wrk (MLP 54→256→256→7, 1 torch thread)", found, remarks)


if __name__ == "__main__":
    main()
