"""Micro-batching policies over real HTTP: rows/s with 64 clients, and one client's p50.

    python -m bench.microbatch [--runs 3] [--seconds 3] [--max-wait-ms 2] [--smoke]

Each policy of bench/batched_server.py runs in its own server process (the service's decode
and answer path around `MicroBatcher`); every figure is a ratio to the `none` policy (one
forward pass per request, as the service does before micro-batching is wired in).
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import ExitStack
from dataclasses import dataclass, field

from bench.common import (
    CLIENTS,
    POLICIES,
    Options,
    Rate,
    Row,
    cpu_ratio,
    median,
    one_row_bodies,
    options,
    report,
)
from bench.servers import Server, module_server
from bench.wire import Connection, run_load

MODELS = {"small": "MLP 256×256", "large": "MLP 2048×2048"}


async def counts(port: int) -> dict[str, dict[str, int]]:
    connection = await Connection.open(port)
    try:
        answer: dict[str, dict[str, int]] = await connection.get("/stats")
        return answer
    finally:
        await connection.close()


@dataclass
class Figures:
    rate: list[Rate] = field(default_factory=list)  # rows per second with CLIENTS clients
    batch: list[float] = field(default_factory=list)  # mean rows per forward meanwhile
    p50: list[float] = field(default_factory=list)  # one client, seconds (small model only)


def loaded(running: Server, model: str, bodies: list[bytes], seconds: float) -> tuple[Rate, float]:
    """Rows per second with CLIENTS clients, and the mean rows per forward pass meanwhile."""
    before = asyncio.run(counts(running.port)).get(model, {"rows": 0, "batches": 0})
    cpu = running.cpu_seconds()
    result = run_load(running.port, f"/predict/{model}", bodies, clients=CLIENTS, seconds=seconds)
    rate = Rate(result.rate, result.total / max(running.cpu_seconds() - cpu, 1e-9))
    after = asyncio.run(counts(running.port))[model]
    batches = max(after["batches"] - before["batches"], 1)
    return rate, (after["rows"] - before["rows"]) / batches


def measure(opts: Options) -> list[Row]:
    bodies = one_row_bodies()
    wait_ms = str(opts.args.max_wait_ms)
    policies = POLICIES[:2] if opts.smoke else POLICIES  # smoke: none and adaptive
    figures = {(policy, model): Figures() for policy in policies for model in MODELS}
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for policy in policies:
            args = ["--policy", policy, "--max-wait-ms", wait_ms]
            started = module_server(policy, "bench.batched_server", args, wait=False)
            servers[policy] = stack.enter_context(started)
        for running in servers.values():
            running.wait_ready()
        for _ in range(opts.runs):  # interleaved: drift hits every policy alike
            for (policy, model), mine in figures.items():
                running = servers[policy]
                rate, batch = loaded(running, model, bodies, opts.seconds)
                mine.rate.append(rate)
                mine.batch.append(batch)
                if model == "small":
                    path = "/predict/small"
                    alone = run_load(running.port, path, bodies, clients=1, seconds=opts.seconds)
                    mine.p50.append(median(alone.latencies))
    return [row for policy in policies[1:] for row in _rows(policy, figures)]


def _rows(policy: str, figures: dict[tuple[str, str], Figures]) -> list[Row]:
    rows = []
    for model, label in MODELS.items():
        mine, none = figures[(policy, model)], figures[("none", model)]
        rows.append(
            Row(
                f"{policy} / none: {CLIENTS} clients × 1 row, {label}",
                f"{median([r.wall for r in mine.rate]):,.0f} rows/s, "
                f"mean batch {median(mine.batch):.1f}",
                f"none {median([r.wall for r in none.rate]):,.0f} rows/s",
                median([m.wall / n.wall for m, n in zip(mine.rate, none.rate, strict=True)]),
                "≥ 3" if model == "large" else "-",
                cpu=cpu_ratio(mine.rate, none.rate),
            )
        )
    mine, none = figures[(policy, "small")], figures[("none", "small")]
    rows.append(
        Row(
            f"{policy} − none: p50 1 client, MLP 256×256",
            f"p50 {median(mine.p50) * 1e3:.2f} ms",
            f"none {median(none.p50) * 1e3:.2f} ms",
            median([(m - n) * 1e3 for m, n in zip(mine.p50, none.p50, strict=True)]),
            "≈ 0",
            "ms",
        )
    )
    return rows


def main() -> None:
    def extend(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--max-wait-ms", type=float, default=2.0, help="MicroBatcher wait")

    opts = options(__doc__ or "", runs=3, extend=extend)
    report(
        "Micro-batching policies (service decode path + MicroBatcher, 1 torch thread)",
        measure(opts),
        [f"median of {opts.runs} interleaved run(s) of {opts.seconds:g} s; max_batch 64"],
    )


if __name__ == "__main__":
    main()
