"""The raw PyTorch reference, measured in the benchmark's own process: the same MLP, one
torch thread, Adam, no service around it. Every figure is a ratio against these."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from bench.common import CLASSES, FEATURES, Rate, dataset


def mlp(hidden: Sequence[int], *, seed: int = 0) -> nn.Sequential:
    """FEATURES → hidden... → CLASSES with ReLU, float32."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = FEATURES
    for neurons in hidden:
        layers += [nn.Linear(width, neurons), nn.ReLU()]
        width = neurons
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers)


def one_thread() -> None:
    torch.set_num_threads(1)


def device() -> torch.device:
    """Where the raw reference runs: `GRADUAL_BENCH_DEVICE` (default cpu; scripts/gpu-check
    sets cuda, beside a server with `GRADUAL_DEVICE=cuda`)."""
    return torch.device(os.environ.get("GRADUAL_BENCH_DEVICE", "cpu"))


def _synchronize() -> None:
    if device().type == "cuda":
        torch.cuda.synchronize()


def warm_up(*, training: bool = False) -> None:
    """First calls are slow (the first optimizer step imports torch's dynamo): pay before
    measuring, while the server boots."""
    forward_seconds((16,), batch=1, seconds=0.0)
    if training:
        train_rate((16,), batch=8, seconds=0.0)


def _batches(count: int, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = dataset(count * batch, seed=1)
    xs = torch.from_numpy(x.astype(np.float32)).to(device())
    ys = torch.from_numpy(y).to(device())
    return [(xs[i : i + batch], ys[i : i + batch]) for i in range(0, count * batch, batch)]


def train_rate(
    hidden: Sequence[int], *, batch: int, seconds: float, steps_per_batch: int = 1,
    replay_ratio: int = 0,
) -> Rate:  # fmt: skip
    """New samples per second (and per CPU-second) of a plain training loop: forward, loss,
    backward, Adam step. With `steps_per_batch` and `replay_ratio` each batch of new rows
    takes that many steps on itself plus `replay_ratio` rows per new row (the work of the
    service's `steps_per_batch` and `replay_ratio`; the drawing of rows is not counted)."""
    network = mlp(hidden).to(device())
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    data = _batches(16, batch * (1 + replay_ratio))

    def step(i: int) -> None:
        x, y = data[i % len(data)]
        for _ in range(steps_per_batch):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(network(x), y).backward()
            optimizer.step()

    for i in range(5):
        step(i)
    steps, start, cpu = 0, time.perf_counter(), time.thread_time()  # one torch thread: this one
    while (elapsed := time.perf_counter() - start) < seconds:
        step(steps)
        steps += 1
    _synchronize()
    elapsed = time.perf_counter() - start
    return Rate(steps * batch / elapsed, steps * batch / max(time.thread_time() - cpu, 1e-9))


def forward_seconds(hidden: Sequence[int], *, batch: int, seconds: float) -> float:
    """Median time of one forward pass (inference mode) at `batch` rows."""
    network = mlp(hidden).eval().to(device())
    x, cuda = _batches(1, batch)[0][0], device().type == "cuda"
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(5):
            network(x)
        start = time.perf_counter()
        while not times or time.perf_counter() - start < seconds:
            begin = time.perf_counter()
            network(x)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)
