"""Metrics of a network on labelled rows: loss, accuracy, MAE, R²."""

from __future__ import annotations

import torch
from torch import nn

from models.losses import make_loss, shape_targets
from models.spec import NetworkSpec

Metrics = dict[str, float]


@torch.no_grad()
def evaluate(network: nn.Module, spec: NetworkSpec, x: torch.Tensor, y: torch.Tensor) -> Metrics:
    """Scores `network` in eval mode (no dropout) and puts its mode back afterwards."""
    was_training = network.training
    network.eval()
    try:
        outputs = network(x)
    finally:
        network.train(was_training)
    return metrics_of(spec, outputs, y)


def metrics_of(spec: NetworkSpec, outputs: torch.Tensor, y: torch.Tensor) -> Metrics:
    targets = shape_targets(spec, y)
    values = {"loss": make_loss(spec)(outputs, targets)}
    if spec.task == "classification":
        values["accuracy"] = (outputs.argmax(dim=1) == targets).float().mean()
    elif spec.task == "binary":
        values["accuracy"] = ((outputs > 0).float() == targets).float().mean()
    else:
        values["mae"] = (outputs - targets).abs().mean()
        total = ((targets - targets.mean(dim=0)) ** 2).sum()
        values["r2"] = 1.0 - ((outputs - targets) ** 2).sum() / total.clamp(min=1e-12)
    names = list(values)
    numbers = torch.stack([values[n].float() for n in names]).tolist()  # one device sync
    return dict(zip(names, numbers, strict=True))
