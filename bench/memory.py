"""Memory: the server's RSS growth over a long partial-fit stream (NDJSON, 256 rows a line).

    python -m bench.memory [--samples 1000000] [--smoke]

The model runs with the service's defaults (holdout 0.1, a round every 20 steps, checkpoints
on improvement, pruning past 20 versions) on labels it can learn, with patience high enough
that it keeps training all the way. RSS (VmRSS of the server process) is read after a warm-up
stream and then sampled every half second; growth is the last reading minus the warm-up one.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Iterator

import orjson

from bench.common import (
    SMALL,
    Options,
    Row,
    fit_bodies,
    model_body,
    options,
    report,
)
from bench.servers import Server, gradual
from bench.wire import Connection

NAME = "mem"
BATCH = 256
LINES = 64  # distinct lines, sent in turn
TRAINING = {"patience": 1_000_000}
MB = 1024 * 1024


def stream(port: int, batches: int, lines: list[bytes]) -> dict[str, int]:
    """Streams `batches` lines in one request; the summary line's counters."""

    async def run() -> dict[str, int]:
        connection = await Connection.open(port)
        answers: list[bytes] = []
        try:
            body = (lines[i % len(lines)] for i in range(batches))
            path = f"/v1/models/{NAME}/partial-fit"
            status = await connection.stream(path, body, answers.append)
        finally:
            await connection.close()
        summary = orjson.loads(answers[-1])["summary"]
        if status != 200 or summary["errors"]:
            raise RuntimeError(f"stream failed: {status} {summary}")
        return dict(summary)

    return asyncio.run(run())


class Sampler:
    """Reads the server's RSS every `every` seconds in a thread."""

    def __init__(self, server: Server, every: float = 0.5) -> None:
        self.server = server
        self.every = every
        self.readings: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.readings.append(self.server.rss_bytes())

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.readings.append(self.server.rss_bytes())


def quarters(readings: list[int]) -> Iterator[str]:
    for fraction in (0.25, 0.5, 0.75, 1.0):
        index = min(len(readings) - 1, int(fraction * (len(readings) - 1)))
        yield f"{readings[index] / MB:.0f}"


async def create(port: int) -> None:
    connection = await Connection.open(port)
    try:
        body = model_body(NAME, SMALL, normalize=True, training=TRAINING)
        await connection.post("/v1/models", body)
    finally:
        await connection.close()


def measure(opts: Options, samples: int) -> tuple[list[Row], list[str]]:
    lines = fit_bodies(LINES, BATCH, seed=3)
    warmup = 10 if opts.smoke else 200  # batches before the first reading
    batches = samples // BATCH
    with gradual(opts) as server:
        asyncio.run(create(server.port))
        stream(server.port, warmup, lines)
        before = server.rss_bytes()
        start = time.perf_counter()
        with Sampler(server) as sampler:
            summary = stream(server.port, batches, lines)
        rate = batches * BATCH / (time.perf_counter() - start)
    readings = sampler.readings
    row = Row(
        f"RSS growth over {batches * BATCH:,} samples (NDJSON stream)",
        f"{before / MB:.0f} → {readings[-1] / MB:.0f} MB, peak {max(readings) / MB:.0f} MB",
        f"after {warmup * BATCH:,} warm-up samples",
        (readings[-1] - before) / MB,
        "≤ 50 MB",
        "MB",
    )
    notes = [
        f"RSS at 25/50/75/100 % of the stream: {' / '.join(quarters(readings))} MB",
        f"{summary['samples_seen']:,} samples trained, step {summary['step']}, served version "
        f"{summary['version']}, state {summary['state']}, {rate:,.0f} samples/s",
    ]
    return [row], notes


def main() -> None:
    def extend(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--samples", type=int, help="default 1,000,000; smoke 20,000")

    opts = options(__doc__ or "", runs=1, extend=extend)
    samples = opts.args.samples or (20_000 if opts.smoke else 1_000_000)
    rows, notes = measure(opts, samples)
    report("Server memory over a long stream (MLP 54→256→256→7, service defaults)", rows, notes)


if __name__ == "__main__":
    main()
