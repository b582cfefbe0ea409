"""Loss functions and target tensors per task."""

from __future__ import annotations

import functools

import torch
from torch import nn

from models.spec import NetworkSpec


def make_loss(spec: NetworkSpec, reduction: str = "mean") -> nn.Module:
    """`reduction="none"`: one loss per element (per row and output), for paired tests."""
    return _loss(spec.resolved_loss, reduction)


@functools.cache
def _loss(name: str, reduction: str) -> nn.Module:
    """Loss modules hold no state: one of each kind serves every caller (made once: building
    a module costs more than the loss of a small batch)."""
    loss: nn.Module = {
        "cross_entropy": nn.CrossEntropyLoss,
        "bce": nn.BCEWithLogitsLoss,
        "mse": nn.MSELoss,
        "huber": nn.HuberLoss,
    }[name](reduction=reduction)
    return loss


def target_dtype(spec: NetworkSpec) -> torch.dtype:
    return torch.int64 if spec.task == "classification" else torch.float32


def shape_targets(spec: NetworkSpec, targets: torch.Tensor) -> torch.Tensor:
    """Brings targets to the shape the loss expects: (N,) class ids, or (N, outputs) values."""
    if spec.task == "classification":
        return targets.reshape(-1)
    return targets.reshape(-1, spec.outputs)
