"""Predict: 64 concurrent clients × one row each, and one client's p50 latency.

    python -m bench.predict [--runs 5] [--seconds 3] [--smoke]

Throughput is the service's rows/s ÷ the naive endpoint of bench/naive_server.py (pydantic
list model, plain `def` route, `torch.tensor(list)`, one forward pass per request), both
measured in this run, on the issue's MLP (54→256→256→7) and on one where the forward pass
dominates (54→2048→2048→7). Latency is one client's p50 minus the raw forward pass at batch 1.
Once micro-batching can be switched off by a setting, `--server-env KEY=VALUE` runs the same
figures without it (with ÷ without is then the ratio of two runs' `service` columns).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import ExitStack

from bench import reference
from bench.common import (
    CLIENTS,
    LARGE,
    SMALL,
    Options,
    Rate,
    Row,
    cpu_ratio,
    median,
    model_body,
    one_row_bodies,
    options,
    report,
)
from bench.servers import Server, gradual, naive
from bench.wire import Connection, run_load

MODELS = {"small": SMALL, "large": LARGE}


async def create(port: int, models: Sequence[str]) -> None:
    connection = await Connection.open(port)
    try:
        for name in models:
            await connection.post("/v1/models", model_body(name, MODELS[name], training={}))
    finally:
        await connection.close()


def rows_per_s(server: Server, path: str, bodies: list[bytes], seconds: float) -> Rate:
    """Rows per second with CLIENTS clients, and rows per server CPU-second."""
    cpu = server.cpu_seconds()
    result = run_load(server.port, path, bodies, clients=CLIENTS, seconds=seconds)
    return Rate(result.rate, result.total / max(server.cpu_seconds() - cpu, 1e-9))


def p50_seconds(port: int, path: str, bodies: list[bytes], seconds: float) -> float:
    return median(run_load(port, path, bodies, clients=1, seconds=seconds).latencies)


def measure(opts: Options) -> list[Row]:
    bodies = one_row_bodies()
    models = ["small"] if opts.smoke else list(MODELS)  # smoke: one naive server fewer
    service: dict[str, list[Rate]] = {name: [] for name in models}
    baseline: dict[str, list[Rate]] = {name: [] for name in models}
    latency: list[float] = []
    forward: list[float] = []
    with ExitStack() as stack:
        naives = {name: stack.enter_context(naive(MODELS[name], wait=False)) for name in models}
        server = stack.enter_context(gradual(opts, meanwhile=reference.warm_up))
        for running in naives.values():
            running.wait_ready()
        asyncio.run(create(server.port, models))
        for _ in range(opts.runs):  # interleaved: drift hits both sides alike
            for name in models:
                path = f"/v1/models/{name}/predict"
                service[name].append(rows_per_s(server, path, bodies, opts.seconds))
                rate = rows_per_s(naives[name], "/predict", bodies, opts.seconds)
                baseline[name].append(rate)
            path = "/v1/models/small/predict"
            latency.append(p50_seconds(server.port, path, bodies, opts.seconds))
            forward.append(reference.forward_seconds(SMALL, batch=1, seconds=opts.seconds))
    return [
        *(_throughput(name, service[name], baseline[name]) for name in models),
        Row(
            "predict p50, 1 client, MLP 256×256, minus raw forward",
            f"p50 {median(latency) * 1e3:.2f} ms",
            f"raw forward b1 {median(forward) * 1e3:.3f} ms",
            median([(lat - fwd) * 1e3 for lat, fwd in zip(latency, forward, strict=True)]),
            "≤ 1 ms",
            "ms",
        ),
    ]


def _throughput(name: str, service: Sequence[Rate], baseline: Sequence[Rate]) -> Row:
    hidden = "×".join(map(str, MODELS[name]))
    return Row(
        f"predict {CLIENTS} clients × 1 row, MLP {hidden} / naive",
        f"{median([r.wall for r in service]):,.0f} rows/s",
        f"naive {median([r.wall for r in baseline]):,.0f} rows/s",
        median([s.wall / b.wall for s, b in zip(service, baseline, strict=True)]),
        "≥ 3" if name == "small" else "-",
        cpu=cpu_ratio(service, baseline),
    )


def main() -> None:
    opts = options(__doc__ or "")
    reference.one_thread()
    rows = measure(opts)
    report(
        "Predict vs a naive FastAPI endpoint and the raw forward pass (1 torch thread)",
        rows,
        [
            f"median of {opts.runs} interleaved run(s) of {opts.seconds:g} s each; per CPU-s: "
            "the same ratio in rows per CPU-second of each server process"
        ],
    )


if __name__ == "__main__":
    main()
