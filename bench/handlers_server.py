"""Two hand-written FastAPI servers the wrk figure compares Gradual with, on the same MLP:

- `lean`: async routes reading the raw body, orjson, NumPy, no pydantic on the hot path, the
  forward pass and the training step run inline on the event loop; `.npy` bodies too.
- `naive`: a pydantic list model, plain `def` routes (FastAPI's thread pool),
  `torch.tensor(list)`; JSON only. Written the way a first version usually is.

Both answer `POST /predict` (`{"inputs": [[...]]}` → labels and probabilities) and
`POST /partial-fit` (`{"inputs", "targets"}` → one Adam step on the batch, the raw loop's work).

    python -m bench.handlers_server --kind lean --port 8100 --hidden 256,256
"""

from __future__ import annotations

import argparse
import io
from typing import Any

import numpy as np
import orjson
import torch
import uvicorn
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel
from torch import nn

from bench.reference import mlp


class Learner:
    """The MLP, its Adam optimizer and a loss: what both servers serve and train."""

    def __init__(self, hidden: list[int]) -> None:
        self.network = mlp(hidden)
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=1e-3)
        self.loss = nn.CrossEntropyLoss()

    def predict(self, x: torch.Tensor) -> dict[str, Any]:
        with torch.inference_mode():
            probabilities = torch.softmax(self.network(x), dim=1)
        return {
            "predictions": probabilities.argmax(dim=1).tolist(),
            "probabilities": probabilities.tolist(),
        }

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(self.network(x), y)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def lean_app(hidden: list[int]) -> FastAPI:
    app, learner = FastAPI(), Learner(hidden)

    @app.get("/readyz")
    async def ready() -> Response:
        return Response(b'{"status":"ready"}', media_type="application/json")

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        body = orjson.loads(await request.body())
        x = torch.from_numpy(np.asarray(body["inputs"], dtype=np.float32))
        return Response(orjson.dumps(learner.predict(x)), media_type="application/json")

    @app.post("/partial-fit")
    async def partial_fit(request: Request) -> Response:
        raw = await request.body()
        if request.headers.get("content-type", "").startswith("application/x-npy"):
            table = np.load(io.BytesIO(raw), allow_pickle=False)
            x, y = np.ascontiguousarray(table["inputs"]), np.ascontiguousarray(table["targets"])
        else:
            body = orjson.loads(raw)
            x = np.asarray(body["inputs"], dtype=np.float32)
            y = np.asarray(body["targets"], dtype=np.int64)
        loss = learner.step(torch.from_numpy(x), torch.from_numpy(y))
        return Response(orjson.dumps({"loss": loss}), media_type="application/json")

    return app


class PredictBody(BaseModel):
    inputs: list[list[float]]


class FitBody(BaseModel):
    inputs: list[list[float]]
    targets: list[int]


def naive_app(hidden: list[int]) -> FastAPI:
    app, learner = FastAPI(), Learner(hidden)

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(body: PredictBody) -> dict[str, Any]:
        return learner.predict(torch.tensor(body.inputs))

    @app.post("/partial-fit")
    def partial_fit(body: FitBody) -> dict[str, float]:
        return {"loss": learner.step(torch.tensor(body.inputs), torch.tensor(body.targets))}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=("lean", "naive"), required=True)
    parser.add_argument("--hidden", default="256,256")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the service under test
    hidden = [int(n) for n in args.hidden.split(",") if n]
    app = lean_app(hidden) if args.kind == "lean" else naive_app(hidden)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
