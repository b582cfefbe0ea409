"""The partial-fit transaction: mini-batch steps that either all apply or leave no trace.

A request is split into mini-batches of `batch_size` rows, one optimizer step each. After the
last step one check (one device sync) looks at every loss, gradient norm, parameter and buffer;
if anything is non-finite or beyond the configured bounds, the head is restored bit for bit
from the copy taken before the first step and the batch is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.losses import shape_targets
from models.spec import OptimizerSpec
from service import crashpoints
from service.errors import BatchRejected
from service.learning.config import TrainingConfig
from service.learning.head import TrainingHead


@dataclass(frozen=True)
class Limits:
    """How a step may run: the bounds it must respect, and its precision."""

    max_weight_abs: float
    max_grad_norm: float
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16: mixed-precision forward/loss


@dataclass(frozen=True)
class FitResult:
    steps: int
    trained: int
    train_loss: float


def fit(
    head: TrainingHead,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    training: TrainingConfig,
    optimizer: OptimizerSpec,
    limits: Limits,
) -> FitResult:
    before = head.state()
    losses: list[torch.Tensor] = []
    norms: list[torch.Tensor] = []
    for start in range(0, inputs.shape[0], training.batch_size):
        x = inputs[start : start + training.batch_size]
        y = targets[start : start + training.batch_size]
        loss, norm = _step(head, x, y, training=training, optimizer=optimizer, limits=limits)
        losses.append(loss)
        norms.append(norm)
        head.step += 1
        head.samples_seen += x.shape[0]
        crashpoints.hit("mid_step")
    step_losses = torch.stack(losses)
    reason = _rejection_reason(head, step_losses, torch.stack(norms), limits)
    if reason is not None:
        head.load_state(before)
        raise BatchRejected(f"batch refused, nothing applied: {reason}", field="inputs")
    sizes = _batch_sizes(inputs.shape[0], training.batch_size)
    mean_loss = float((step_losses.cpu() * sizes).sum()) / inputs.shape[0]
    return FitResult(len(losses), inputs.shape[0], mean_loss)


def _step(
    head: TrainingHead,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    training: TrainingConfig,
    optimizer: OptimizerSpec,
    limits: Limits,
) -> tuple[torch.Tensor, torch.Tensor]:
    network = head.network
    if network.normalizer is not None:
        network.normalizer.update(x)  # training rows only: predict never moves the statistics
    if training.augment_noise > 0.0:
        noise = torch.randn(x.shape, generator=head.generator, device=x.device)
        x = x + noise * training.augment_noise
    head.optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=limits.autocast, enabled=limits.autocast is not None):
        loss = head.loss(network(x), shape_targets(head.spec, y)).float()
    penalty = _l1_penalty(head, optimizer.l1) if optimizer.l1 > 0.0 else None
    objective = loss if penalty is None else loss + penalty
    objective.backward()
    max_norm = optimizer.clip_grad_norm or float("inf")
    norm = torch.nn.utils.clip_grad_norm_(network.parameters(), max_norm, foreach=False)
    head.optimizer.step()
    return loss.detach(), norm.detach()


def _l1_penalty(head: TrainingHead, strength: float) -> torch.Tensor:
    weights = [layer.weight for layer in head.network.linear_layers()]
    return strength * torch.stack([w.abs().sum() for w in weights]).sum()


def _rejection_reason(
    head: TrainingHead, losses: torch.Tensor, norms: torch.Tensor, limits: Limits
) -> str | None:
    params = [p.detach() for p in head.network.parameters()]
    buffers = [b.detach() for b in head.network.buffers()]
    weight_max = torch.stack([p.abs().max() for p in params]).max()
    checks = torch.stack(
        [
            (~torch.isfinite(losses)).any(),
            (~torch.isfinite(norms)).any(),
            norms.max() > limits.max_grad_norm,
            ~torch.isfinite(weight_max) | (weight_max > limits.max_weight_abs),
            torch.stack([~torch.isfinite(b).all() for b in buffers]).any()
            if buffers
            else torch.tensor(False, device=losses.device),
        ]
    ).tolist()  # the one device sync of the request
    reasons = [
        "the loss is not finite",
        "the gradient norm is not finite",
        f"the gradient norm exceeds max_grad_norm={limits.max_grad_norm:g}",
        f"a weight would be non-finite or beyond ±{limits.max_weight_abs:g}",
        "the normalizer's statistics would be non-finite",
    ]
    return next((reason for reason, failed in zip(reasons, checks, strict=True) if failed), None)


def _batch_sizes(rows: int, batch_size: int) -> torch.Tensor:
    full, rest = divmod(rows, batch_size)
    sizes = [batch_size] * full + ([rest] if rest else [])
    return torch.tensor(sizes, dtype=torch.float32)
