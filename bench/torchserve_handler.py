"""The TorchServe handler bench/http_wrk.py measures beside Gradual: the bench's MLP
(54 → 256 → 256 → 7, float32, ReLU) built from seed 0 exactly as `bench.reference.mlp` builds
it, so no weights file is read (nothing is unpickled). Each request of a TorchServe batch is
one predict body, `{"inputs": [[...54 numbers...]]}`; the batch's rows go through one forward
pass, and each request gets `{"predictions": [...], "probabilities": [[...]]}` back.

It runs in TorchServe's Python worker, which imports this file alone: nothing from `bench`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import torch
from torch import nn

FEATURES, HIDDEN, CLASSES, SEED = 54, (256, 256), 7, 0


def network() -> nn.Sequential:
    """The bench's MLP, its weights drawn from `SEED` as `bench.reference.mlp` draws them."""
    torch.manual_seed(SEED)
    layers: list[nn.Module] = []
    width = FEATURES
    for neurons in HIDDEN:
        layers += [nn.Linear(width, neurons), nn.ReLU()]
        width = neurons
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers).eval()


def rows(request: dict[str, Any]) -> list[list[float]]:
    """One request's rows. TorchServe hands a JSON body over decoded, other bodies as bytes."""
    body: Any = request.get("body", request.get("data"))
    if isinstance(body, bytes | bytearray):
        body = orjson.loads(body)
    inputs: list[list[float]] = body["inputs"]
    return inputs


class MLPHandler:
    """TorchServe's entry point: `initialize` once in the worker, `handle` once a batch."""

    def __init__(self) -> None:
        self.model: nn.Sequential | None = None

    def initialize(self, context: Any) -> None:
        torch.set_num_threads(1)  # as every other server of the bench
        self.model = network()

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[bytes]:
        assert self.model is not None, "initialize first"
        per_request = [rows(request) for request in data]
        x = torch.from_numpy(np.asarray([r for rs in per_request for r in rs], dtype=np.float32))
        with torch.inference_mode():
            probabilities = torch.softmax(self.model(x), dim=1)
        labels = probabilities.argmax(dim=1).tolist()
        listed = probabilities.tolist()
        answers, start = [], 0
        for index, request_rows in enumerate(per_request):
            end = start + len(request_rows)
            answer = {"predictions": labels[start:end], "probabilities": listed[start:end]}
            answers.append(orjson.dumps(answer))
            context.set_response_content_type(index, "application/json")
            start = end
        return answers
