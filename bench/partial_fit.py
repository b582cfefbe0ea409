"""HTTP partial-fit throughput at batch 256, one sequential client ÷ the raw PyTorch loop.

    python -m bench.partial_fit [--runs 5] [--seconds 3] [--smoke]
    python -m bench.partial_fit --server-env GRADUAL_DURABILITY=checkpoint

Rows: JSON and `.npy` bodies on a model with holdout 0, no rounds, no replay and one step
per mini-batch (`replay: 0, steps_per_batch: 1`: the raw loop's work, so the ratio is the
service's cost around the step itself), and JSON on the service's defaults (holdout 0.1, a
round every 4 steps, the normalizer on, replay 2000 × ratio 3, 2 steps per mini-batch) but
for an unbounded patience, so that it never stops training. That last row is divided by a
raw loop doing the same work per batch (2 steps on 256 + 768 rows), not by the plain one.
All with batch_size 256. The server runs with its own settings (durability `wal` by default).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from bench import reference
from bench.common import (
    SMALL,
    Options,
    Rate,
    Row,
    cpu_ratio,
    fit_bodies,
    median,
    model_body,
    npy_fit_bodies,
    options,
    report,
)
from bench.servers import Server, gradual
from bench.wire import JSON, NPY, Connection

BATCH = 256
TRAINING_ONLY = {
    "batch_size": BATCH, "holdout": 0.0, "eval_every": 1_000_000_000, "replay": 0,
    "steps_per_batch": 1,
}  # fmt: skip
SAME_WORK = {"steps_per_batch": 2, "replay_ratio": 3}  # the raw loop for the defaults row
DEFAULTS = {"batch_size": BATCH, "patience": 1_000_000}  # never stops: it trains throughout


@dataclass(frozen=True)
class Case:
    label: str
    model: str
    content_type: str
    bodies: list[bytes]
    target: str
    same_work: bool = False  # divided by the raw loop doing replay and 2 steps
    pipelined: bool = False  # `?wait=false`: answered at acceptance, trained meanwhile


def cases(count: int) -> list[Case]:
    json_bodies, npy_bodies = fit_bodies(count, BATCH), npy_fit_bodies(count, BATCH)
    return [
        Case("JSON, holdout 0, no rounds", "train", JSON, json_bodies, "≥ 0.70"),
        Case(".npy, holdout 0, no rounds", "train", NPY, npy_bodies, "≥ 0.90"),
        Case("JSON, pipelined", "train", JSON, json_bodies, "≥ 0.70", pipelined=True),
        Case(".npy, pipelined", "train", NPY, npy_bodies, "≥ 0.90", pipelined=True),
        Case("JSON, defaults (patience ∞)", "defaults", JSON, json_bodies, "-", same_work=True),
    ]


async def http_rate(server: Server, case: Case, seconds: float) -> Rate:
    """Samples per second (and per server CPU-second) of one client posting back to back."""
    connection = await Connection.open(server.port)
    path, bodies = f"/v1/models/{case.model}/partial-fit", case.bodies
    try:
        for body in bodies[:3]:  # warm-up
            (await connection.request("POST", path, body, case.content_type)).ok()
        queued = f"{path}?wait=false" if case.pipelined else path
        sent, start, cpu = 0, time.perf_counter(), server.cpu_seconds()
        while time.perf_counter() - start < seconds:
            await accepted(connection, queued, bodies[sent % len(bodies)], case.content_type)
            sent += 1
        if case.pipelined:  # a waiting batch queues behind the others: all are trained then
            await accepted(connection, path, bodies[0], case.content_type)
            sent += 1
        elapsed = time.perf_counter() - start
        used = max(server.cpu_seconds() - cpu, 1e-9)
        return Rate(sent * BATCH / elapsed, sent * BATCH / used)
    finally:
        await connection.close()


async def accepted(connection: Connection, path: str, body: bytes, content_type: str) -> None:
    """Posts until the batch is taken: a full queue (429) is retried, as a client would."""
    while (answer := await connection.request("POST", path, body, content_type)).status == 429:
        await asyncio.sleep(0.001)
    answer.ok()


async def still_training(port: int) -> None:
    """A stopped model answers without training: its figures would flatter the service."""
    connection = await Connection.open(port)
    try:
        for name in ("train", "defaults"):
            state = (await connection.get(f"/v1/models/{name}"))["state"]
            if state != "training":
                raise RuntimeError(f"model {name} is {state}: the figures would be wrong")
    finally:
        await connection.close()


async def create(port: int) -> None:
    connection = await Connection.open(port)
    try:
        await connection.post("/v1/models", model_body("train", SMALL, training=TRAINING_ONLY))
        body = model_body("defaults", SMALL, normalize=True, training=DEFAULTS)
        await connection.post("/v1/models", body)
    finally:
        await connection.close()


def measure(opts: Options) -> list[Row]:
    measured = cases(8 if opts.smoke else 32)
    raw: list[Rate] = []
    same: list[Rate] = []
    http: dict[str, list[Rate]] = {case.label: [] for case in measured}
    with gradual(opts, meanwhile=lambda: reference.warm_up(training=True)) as server:
        asyncio.run(create(server.port))
        for _ in range(opts.runs):  # interleaved, so drift hits both sides alike
            raw.append(reference.train_rate(SMALL, batch=BATCH, seconds=opts.seconds))
            same.append(reference.train_rate(SMALL, batch=BATCH, seconds=opts.seconds, **SAME_WORK))
            for case in measured:
                http[case.label].append(asyncio.run(http_rate(server, case, opts.seconds)))
        asyncio.run(still_training(server.port))
    return [_row(case, http[case.label], same if case.same_work else raw) for case in measured]


def _row(case: Case, http: list[Rate], raw: list[Rate]) -> Row:
    loop = "raw loop, 2 steps on 256+768 rows" if case.same_work else "raw loop"
    return Row(
        f"partial-fit b{BATCH} {case.label} / {loop}",
        f"{median([r.wall for r in http]):,.0f} samples/s",
        f"{loop} {median([r.wall for r in raw]):,.0f} samples/s",
        median([h.wall / r.wall for h, r in zip(http, raw, strict=True)]),
        case.target,
        cpu=cpu_ratio(http, raw),
    )


def main() -> None:
    opts = options(__doc__ or "")
    reference.one_thread()
    rows = measure(opts)
    report(
        "HTTP partial-fit vs the raw PyTorch loop (MLP 54→256→256→7, Adam, 1 torch thread)",
        rows,
        [
            f"median of {opts.runs} interleaved run(s) of {opts.seconds:g} s each; per CPU-s: "
            "the same ratio in samples per CPU-second (server process, all threads)"
        ],
    )


if __name__ == "__main__":
    main()
