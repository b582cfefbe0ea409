"""Rollback and promotion: from the request to the new version served, as a client sees it.

    python -m bench.rollback [--runs 5] [--smoke]

One connection polls predict back to back; another posts `/promote` or `/rollback`. The figure
is the time from sending that request to the first predict answer naming the new version.
The reference is the raw cost of the swap itself: `load_state_dict` of the weights in memory.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson
import torch

from bench import reference
from bench.common import SMALL, Options, Row, fit_bodies, median, model_body, options, report
from bench.servers import gradual
from bench.wire import Connection

NAME = "r"
TRAINING = {"batch_size": 256, "holdout": 0.0, "eval_every": 1_000_000_000, "promote": "manual"}


@dataclass
class Poller:
    """Predicts back to back and remembers when each served version was first seen."""

    connection: Connection
    body: bytes
    first_seen: dict[int, float] = field(default_factory=dict)
    latest: int = 0
    running: bool = True

    async def run(self) -> None:
        path = f"/v1/models/{NAME}/predict"
        while self.running:
            answer = (await self.connection.request("POST", path, self.body)).ok().json()
            self.latest = answer["version"]
            self.first_seen.setdefault(self.latest, time.perf_counter())
            await asyncio.sleep(0)

    async def served(self, version: int, timeout: float = 10.0) -> float:
        deadline = time.perf_counter() + timeout
        while self.latest != version:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"version {version} never served")
            await asyncio.sleep(0.0005)
        return self.first_seen[version]


async def prepare(port: int) -> None:
    """Versions 1 (init) and 2..5 (after some training each); version 1 stays served."""
    connection = await Connection.open(port)
    try:
        await connection.post("/v1/models", model_body(NAME, SMALL, training=TRAINING))
        for body in fit_bodies(4, 256):
            (await connection.request("POST", f"/v1/models/{NAME}/partial-fit", body)).ok()
            await connection.post(f"/v1/models/{NAME}/versions", {})
    finally:
        await connection.close()


async def switch_times(port: int, action: str, switches: int) -> list[float]:
    """Seconds from posting `action` to the first predict answer from the new version."""
    control, polling = await Connection.open(port), await Connection.open(port)
    poller = Poller(polling, orjson.dumps({"inputs": [[0.5] * 54]}))
    task = asyncio.create_task(poller.run())
    times = []
    try:
        for _ in range(switches):
            await asyncio.sleep(0.02)  # the poller settles on the current version
            version = 2 + (poller.latest - 1) % 4  # 2..5 in turn, never the one served now
            poller.first_seen.clear()
            sent = time.perf_counter()
            await control.post(f"/v1/models/{NAME}/{action}", {"version": version})
            times.append(await poller.served(version) - sent)
    finally:
        poller.running = False
        await task
        await control.close()
        await polling.close()
    return times


def swap_seconds() -> float:
    """The raw swap: copy a state dict into a network (median of 50)."""
    network = reference.mlp(SMALL)
    state = {k: v.clone() for k, v in reference.mlp(SMALL, seed=1).state_dict().items()}
    times = []
    for _ in range(50):
        start = time.perf_counter()
        with torch.no_grad():
            network.load_state_dict(state)
        times.append(time.perf_counter() - start)
    return median(times)


def measure(opts: Options) -> list[Row]:
    switches = 4 if opts.smoke else 10 * opts.runs
    with gradual(opts, meanwhile=reference.warm_up) as server:
        asyncio.run(prepare(server.port))
        measured = {
            action: asyncio.run(switch_times(server.port, action, switches))
            for action in ("promote", "rollback")
        }
    swap = f"raw load_state_dict {swap_seconds() * 1e3:.3f} ms"
    return [
        Row(
            f"{action}: request → new version served",
            f"max {max(times) * 1e3:.1f} ms over {len(times)}",
            swap,
            median(times) * 1e3,
            "≤ 50 ms",
            "ms",
        )
        for action, times in measured.items()
    ]


def main() -> None:
    opts = options(__doc__ or "")
    reference.one_thread()
    report(
        "Rollback and promotion latency, seen by a client polling predict (MLP 54→256→256→7)",
        measure(opts),
        ["value: median; versions 1..5 on disk; each switch goes to a version not served now"],
    )


if __name__ == "__main__":
    main()
