"""Metrics of a network on labelled rows: loss, accuracy, MAE, R²."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from models.losses import make_loss, shape_targets
from models.spec import NetworkSpec
from service.learning.rules import Paired, Spread

Metrics = dict[str, float]


@torch.no_grad()
def evaluate(network: nn.Module, spec: NetworkSpec, x: torch.Tensor, y: torch.Tensor) -> Metrics:
    """Scores `network` in eval mode (no dropout) and puts its mode back afterwards."""
    return metrics_of(spec, _eval_outputs(network, x), y)


@torch.no_grad()
def paired(
    head: nn.Module | torch.Tensor, best: nn.Module, spec: NetworkSpec, metric: str,
    x: torch.Tensor, y: torch.Tensor,
) -> Paired | None:  # fmt: skip
    """`head` and `best` row by row on the same rows (None for a metric with no per-row value,
    R²): their means and the standard error of the mean per-row difference. A row held more
    than once (a stream that comes round again) counts once: copies are no evidence. `head`
    may be its outputs on `x`, already computed."""
    head_outputs = head if isinstance(head, torch.Tensor) else _eval_outputs(head, x)
    ours = per_row(spec, metric, head_outputs, y)
    theirs = per_row(spec, metric, _eval_outputs(best, x), y)
    if ours is None or theirs is None:
        return None
    distinct = distinct_rows(x)
    ours, theirs = _per_distinct(ours, distinct), _per_distinct(theirs, distinct)
    if ours.shape[0] < 2:
        return None
    stderr = (ours - theirs).std() / ours.shape[0] ** 0.5
    values = torch.stack([ours.mean(), theirs.mean(), stderr]).tolist()
    return Paired(*values)


@torch.no_grad()
def spread(
    network: nn.Module, spec: NetworkSpec, metric: str, x: torch.Tensor, y: torch.Tensor
) -> Spread | None:
    """`network`'s per-row `metric` on the rows: mean and standard error, each distinct row
    counted once (None for R², or fewer than two distinct rows)."""
    values = per_row(spec, metric, _eval_outputs(network, x), y)
    if values is None:
        return None
    values = _per_distinct(values, distinct_rows(x))
    if values.shape[0] < 2:
        return None
    mean, stderr = torch.stack([values.mean(), values.std() / values.shape[0] ** 0.5]).tolist()
    return Spread(mean, stderr)


def distinct_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row's group: rows with identical bytes share one. (Sorted as byte strings on the
    host: `torch.unique(dim=0)` takes 8 times longer on 2,000 rows of 64 features.)"""
    rows = np.ascontiguousarray(x.detach().cpu().numpy())
    keys = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    _, groups = np.unique(keys, return_inverse=True)
    return torch.from_numpy(groups.astype(np.int64).reshape(-1)).to(x.device)


def _per_distinct(values: torch.Tensor, distinct: torch.Tensor) -> torch.Tensor:
    """The mean of `values` over each group of identical rows (float64)."""
    groups = int(distinct.max()) + 1
    sums = torch.zeros(groups, dtype=torch.float64, device=values.device)
    sums.index_add_(0, distinct, values.double())
    return sums / torch.bincount(distinct, minlength=groups).double()


def per_row(
    spec: NetworkSpec, metric: str, outputs: torch.Tensor, y: torch.Tensor
) -> torch.Tensor | None:
    """One value of `metric` per row, whose mean is the metric (None for R²)."""
    targets = shape_targets(spec, y)
    if metric == "loss":
        values: torch.Tensor = make_loss(spec, reduction="none")(outputs, targets)
    elif metric == "accuracy" and spec.task == "classification":
        values = (outputs.argmax(dim=1) == targets).float()
    elif metric == "accuracy":
        values = ((outputs > 0).float() == targets).float()
    elif metric == "mae":
        values = (outputs - targets).abs()
    else:
        return None
    return values.reshape(values.shape[0], -1).float().mean(dim=1)


@torch.no_grad()
def outputs_of(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`network`'s outputs on `x` in eval mode, without gradients."""
    return _eval_outputs(network, x)


def _eval_outputs(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not _mode_matters(network):
        out: torch.Tensor = network(x)
        return out
    was_training = network.training
    network.eval()
    try:
        outputs: torch.Tensor = network(x)
    finally:
        network.train(was_training)
    return outputs


def _mode_matters(network: nn.Module) -> bool:
    """Whether eval mode changes `network`'s outputs: dropout is the only layer a spec builds
    that depends on it (switching modes walks every module, twice a pass)."""
    spec = getattr(network, "spec", None)
    return not isinstance(spec, NetworkSpec) or spec.dropout > 0.0


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
