"""The paired comparison behind a rollback: the head and the best version on the same rows."""

from __future__ import annotations

import torch

from models.network import build_network
from models.spec import NetworkSpec
from service.learning.evaluation import paired

SPEC = NetworkSpec(task="classification", inputs=4, outputs=3, hidden=[8])


def rows(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def test_the_same_network_is_no_worse_with_no_spread() -> None:
    network = build_network(SPEC, seed=0)
    found = paired(network, network, SPEC, "loss", *rows(50))
    assert found is not None
    assert (found.head - found.best, found.stderr) == (0.0, 0.0)


def test_copies_of_a_row_are_no_extra_evidence() -> None:
    head, best = build_network(SPEC, seed=0), build_network(SPEC, seed=1)
    x, y = rows(50)
    once = paired(head, best, SPEC, "loss", x, y)
    ten_times = paired(head, best, SPEC, "loss", x.repeat(10, 1), y.repeat(10))
    assert once is not None
    assert ten_times is not None
    assert abs(once.stderr - ten_times.stderr) < 1e-9
    assert abs((once.head - once.best) - (ten_times.head - ten_times.best)) < 1e-9


def test_r2_has_no_per_row_value() -> None:
    spec = NetworkSpec(task="regression", inputs=4, outputs=1)
    network = build_network(spec, seed=0)
    x, _ = rows(20)
    assert paired(network, network, spec, "r2", x, torch.randn(20, 1)) is None
