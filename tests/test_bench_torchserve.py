"""The TorchServe handler bench/http_wrk.py measures serves the bench's own MLP and answers
each request of a batch with its own rows; with TorchServe installed (bench/torchserve_setup),
a real TorchServe answers a predict body the same way. Without it that one test skips."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import numpy as np
import pytest
import torch

from bench.common import SMALL, dataset
from bench.reference import mlp
from bench.torchserve import executable, torchserve
from bench.torchserve_handler import MLPHandler, network


class Context:
    """What the handler asks of TorchServe's context: a content type per answer."""

    def __init__(self) -> None:
        self.content_types: dict[int, str] = {}

    def set_response_content_type(self, index: int, content_type: str) -> None:
        self.content_types[index] = content_type


def reference_probabilities(rows: list[list[float]]) -> np.ndarray:
    with torch.inference_mode():
        logits = mlp(SMALL)(torch.tensor(rows, dtype=torch.float32))
    return torch.softmax(logits, dim=1).numpy()


def test_torchserve_handler_builds_the_bench_mlp_with_the_same_weights() -> None:
    ours, theirs = network().state_dict(), mlp(SMALL).state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


def test_torchserve_handler_answers_each_request_of_a_batch_with_its_own_rows() -> None:
    x, _ = dataset(3, seed=5)
    handler, context, threads = MLPHandler(), Context(), torch.get_num_threads()
    try:
        handler.initialize(context)  # one torch thread, as in TorchServe's worker
    finally:
        torch.set_num_threads(threads)
    batch: list[dict[str, Any]] = [
        {"body": {"inputs": x[:2].tolist()}},
        {"body": json.dumps({"inputs": x[2:].tolist()}).encode()},  # not decoded by TorchServe
    ]
    answers = [json.loads(answer) for answer in handler.handle(batch, context)]
    probabilities = reference_probabilities(x.tolist())
    assert [len(answer["predictions"]) for answer in answers] == [2, 1]
    got = np.array([row for answer in answers for row in answer["probabilities"]])
    np.testing.assert_allclose(got, probabilities, rtol=1e-5, atol=1e-6)
    assert context.content_types == {0: "application/json", 1: "application/json"}


@pytest.mark.skipif(executable() is None, reason="TorchServe not installed (torchserve_setup)")
def test_torchserve_answers_a_one_row_predict_body() -> None:
    binary = executable()
    assert binary is not None
    x, _ = dataset(1, seed=6)
    body = json.dumps({"inputs": x.tolist()}).encode()
    with torchserve(binary) as running:
        url = f"http://127.0.0.1:{running.port}/predictions/small"
        request = urllib.request.Request(url, body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            got = json.loads(answer.read())
    expected = reference_probabilities(x.tolist())
    assert got["predictions"] == expected.argmax(axis=1).tolist()
    np.testing.assert_allclose(got["probabilities"], expected, rtol=1e-5, atol=1e-6)
