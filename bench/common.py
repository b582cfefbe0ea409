"""What every benchmark shares: options, test data, model bodies, medians, the report."""

from __future__ import annotations

import argparse
import io
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

FEATURES, CLASSES = 54, 7
SMALL = (256, 256)  # the MLP: 54 → 256 → 256 → 7
LARGE = (2048, 2048)  # a model where the forward pass dominates
CLIENTS = 64  # concurrent predict clients, one row each
POLICIES = ("none", "adaptive", "fixed", "adaptive2")  # bench/batched_server.py's


@dataclass(frozen=True)
class Options:
    smoke: bool
    runs: int
    seconds: float
    log_level: str | None
    server_env: dict[str, str]
    args: argparse.Namespace  # everything parsed, a script's own options included


def options(
    description: str, *, runs: int = 5, seconds: float = 3.0,
    extend: Callable[[argparse.ArgumentParser], object] | None = None,
) -> Options:  # fmt: skip
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="about a second per measurement")
    parser.add_argument("--runs", type=int, default=runs, help="repetitions (median)")
    parser.add_argument("--seconds", type=float, default=seconds, help="per measurement")
    parser.add_argument(
        "--log-level", default=None, help="GRADUAL_LOG_LEVEL for the server (default: its own)"
    )
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="KEY=VALUE",
        help="an extra environment variable for the Gradual server (repeatable)",
    )  # fmt: skip
    if extend is not None:
        extend(parser)
    args = parser.parse_args()
    server_env = dict(item.split("=", 1) for item in args.server_env)
    if args.smoke:
        return Options(True, 1, 0.3, args.log_level, server_env, args)
    return Options(False, args.runs, args.seconds, args.log_level, server_env, args)


def model_body(
    name: str, hidden: Sequence[int], *, normalize: bool = False, training: Mapping[str, object]
) -> dict[str, object]:
    """A classifier shaped like the reference MLP (no dropout: the raw loop has none)."""
    spec = {
        "task": "classification", "inputs": FEATURES, "outputs": CLASSES,
        "hidden": list(hidden), "activation": "relu", "dropout": 0.0, "normalize": normalize,
    }  # fmt: skip
    optimizer = {"name": "adam", "lr": 0.001}
    return {
        "name": name,
        "spec": spec,
        "optimizer": optimizer,
        "training": dict(training),
        "seed": 0,
    }


# -- data ---------------------------------------------------------------------------------


def dataset(rows: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features with 4 decimals (what a client typically sends: `0.1234`, not the float32
    `0.12340000271797180`), float64 so that they print short; class labels that are a fixed
    function of them, so that validation improves and a model on defaults keeps training."""
    teacher = np.random.default_rng(1234).normal(size=(FEATURES, CLASSES))
    x = np.random.default_rng(seed).normal(size=(rows, FEATURES)).round(4)
    return x, (x @ teacher).argmax(axis=1)


def fit_bodies(count: int, batch: int, *, seed: int = 0) -> list[bytes]:
    x, y = dataset(count * batch, seed=seed)
    return [
        orjson.dumps({"inputs": x[i : i + batch].tolist(), "targets": y[i : i + batch].tolist()})
        for i in range(0, count * batch, batch)
    ]


def npy_fit_bodies(count: int, batch: int, *, seed: int = 0) -> list[bytes]:
    """The same batches as `fit_bodies`, as `.npy` structured arrays (float32 inputs)."""
    x, y = dataset(count * batch, seed=seed)
    table = np.zeros(len(x), dtype=[("inputs", "<f4", (FEATURES,)), ("targets", "<i8")])
    table["inputs"], table["targets"] = x, y
    bodies = []
    for i in range(0, count * batch, batch):
        buffer = io.BytesIO()
        np.save(buffer, table[i : i + batch], allow_pickle=False)
        bodies.append(buffer.getvalue())
    return bodies


def one_row_bodies(count: int = 256) -> list[bytes]:
    """Predict bodies of one row each."""
    x, _ = dataset(count, seed=2)
    return [orjson.dumps({"inputs": [row]}) for row in x.tolist()]


# -- results ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass(frozen=True)
class Rate:
    """Work per wall-clock second, and per CPU-second of the process doing it. On a busy
    machine the CPU figure moves much less than the wall-clock one."""

    wall: float
    cpu: float


def cpu_ratio(service: Sequence[Rate], reference: Sequence[Rate]) -> float:
    return median([s.cpu / r.cpu for s, r in zip(service, reference, strict=True)])


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    reference: str
    value: float
    target: str
    unit: str = "ratio"
    cpu: float | None = None  # the same ratio in work per CPU-second


def report(title: str, rows: Sequence[Row], notes: Sequence[str] = ()) -> None:
    """The table, then one plain `figure` line per row (what the smoke test looks for)."""
    console = Console(width=160)
    table = Table(title=title, show_lines=False)
    for column in ("figure", "service", "reference", "value", "target", "per CPU-s"):
        table.add_column(column, justify="left" if column in ("figure", "target") else "right")
    for row in rows:
        value = f"{row.value:.2f}" if row.unit == "ratio" else f"{row.value:.2f} {row.unit}"
        cpu = "" if row.cpu is None else f"{row.cpu:.2f}"
        table.add_row(row.figure, row.measured, row.reference, value, row.target, cpu)
    console.print(table)
    for note in notes:
        console.print(note, style="dim")
    for row in rows:
        print(f"figure {row.figure}: {row.value:.3f} {row.unit} (target {row.target})", flush=True)
