"""A stand-in for Gradual's predict path with `MicroBatcher` wired in, to compare batching
policies over real HTTP before the service itself uses one (bench/microbatch.py runs it).

It decodes like the service (orjson, `matrix_from`, `torch.from_numpy`), answers like the
service (`decode_outputs`, orjson), and differs only in how the forward pass is run:

    none       one worker-thread forward pass per request (what the service does today)
    adaptive   MicroBatcher: leave at once when idle, gather while a forward runs
    fixed      MicroBatcher: the first request waits up to --max-wait-ms for company
    adaptive2  adaptive, with up to two forward passes at once

    python -m bench.batched_server --port 8200 --policy adaptive
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Hashable

import orjson
import torch
import uvicorn
from anyio import to_thread
from fastapi import FastAPI, Request, Response

from bench.common import CLASSES, FEATURES, LARGE, POLICIES, SMALL
from models.network import build_network
from models.spec import NetworkSpec
from service.learning.served import ServedModel, decode_outputs
from service.runtime.batches import matrix_from
from service.runtime.microbatch import MicroBatcher

Counts = dict[str, dict[str, int]]


def batcher_for(policy: str, max_wait_s: float, counts: Counts) -> MicroBatcher | None:
    if policy == "none":
        return None

    def count(key: Hashable, rows: int, requests: int) -> None:
        counts[str(key)]["rows"] += rows
        counts[str(key)]["batches"] += 1

    return MicroBatcher(
        max_batch=64, max_wait_s=max_wait_s, adaptive=policy != "fixed",
        max_concurrent=2 if policy == "adaptive2" else 1, on_batch=count,
    )  # fmt: skip


def create_app(policy: str, max_wait_s: float) -> FastAPI:
    app = FastAPI()
    counts: Counts = defaultdict(lambda: {"rows": 0, "batches": 0})
    batcher = batcher_for(policy, max_wait_s, counts)
    models = {
        name: ServedModel(1, build_network(_spec(hidden), seed=0))
        for name, hidden in (("small", SMALL), ("large", LARGE))
    }

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/stats")
    async def stats() -> Counts:
        """Rows and forward passes per model so far (none: one pass per request)."""
        return counts

    @app.post("/predict/{name}")
    async def predict(name: str, request: Request) -> Response:
        served = models[name]
        payload = orjson.loads(await request.body())
        inputs = matrix_from(
            payload["inputs"], field="inputs", features=FEATURES, max_rows=65536, max_abs=1e12
        )
        rows = torch.from_numpy(inputs)
        if batcher is None:
            outputs = await to_thread.run_sync(served.outputs, rows)
            counts[name]["rows"] += rows.shape[0]
            counts[name]["batches"] += 1
        else:
            outputs = await batcher.submit(name, served, rows)
        result = decode_outputs(served.spec, outputs)
        body = {"predictions": result.predictions, "probabilities": result.probabilities}
        return Response(orjson.dumps(body), media_type="application/json")

    return app


def _spec(hidden: tuple[int, ...]) -> NetworkSpec:
    return NetworkSpec(
        task="classification", inputs=FEATURES, outputs=CLASSES, hidden=list(hidden),
        normalize=False,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--policy", choices=POLICIES, default="adaptive")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    app = create_app(args.policy, args.max_wait_ms / 1e3)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
