"""The naive FastAPI predict endpoint the issue compares Gradual with: a pydantic list model,
a plain `def` route (FastAPI runs it in its thread pool), `torch.tensor(list)`, one forward
pass per request. Deliberately written the way a first version usually is.

    python -m bench.naive_server --port 8100 --hidden 256,256
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from bench.reference import mlp


class PredictBody(BaseModel):
    inputs: list[list[float]]


def create_app(hidden: list[int]) -> FastAPI:
    app = FastAPI()
    network = mlp(hidden).eval()

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(body: PredictBody) -> dict[str, Any]:
        with torch.no_grad():
            probabilities = torch.softmax(network(torch.tensor(body.inputs)), dim=1)
        return {
            "predictions": probabilities.argmax(dim=1).tolist(),
            "probabilities": probabilities.tolist(),
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--hidden", default="256,256")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the service under test
    hidden = [int(n) for n in args.hidden.split(",") if n]
    uvicorn.run(create_app(hidden), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
