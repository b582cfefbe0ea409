"""The partial-fit transaction: mini-batch steps that either all apply or leave no trace.

A request is split into mini-batches of `batch_size` rows, `steps_per_batch` optimizer steps
each, every step on the mini-batch plus rows drawn from the replay buffer. After the
last step one check (one device sync) looks at every loss, gradient norm, parameter and buffer;
if anything is non-finite or beyond the configured bounds, the head is restored bit for bit
from the copy taken before the first step and the batch is refused with the reason.

The copy goes into buffers the head keeps between requests (`Backup`), and the gradient norm
is one fused reduction unless clipping is on: the transaction costs a copy, not a clone.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from models.losses import shape_targets
from models.spec import OptimizerSpec
from service import crashpoints
from service.errors import BatchRejected
from service.learning.compilation import CompileMode
from service.learning.head import TrainingHead
from service.learning.replay import ReplayBuffer
from service.learning.training_config import TrainingConfig


@dataclass(frozen=True)
class Limits:
    """How a step may run: the bounds it must respect, its precision, what is compiled."""

    max_weight_abs: float
    max_grad_norm: float
    autocast: torch.dtype | None = None  # e.g. torch.bfloat16: mixed-precision forward/loss
    compile: CompileMode = "off"  # the effective mode (see service/learning/compilation.py)

    @property
    def compile_predict(self) -> bool:
        return self.compile != "off"

    @property
    def compile_training(self) -> bool:
        return self.compile == "all"


@dataclass(frozen=True)
class FitResult:
    steps: int
    trained: int
    train_loss: float
    # The first step's outputs for the request's first `keep_outputs` rows, computed before
    # any step: the head's own scores of them (see `fit`'s `keep_outputs`).
    first_outputs: torch.Tensor | None = None


def fit(
    head: TrainingHead,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    training: TrainingConfig,
    optimizer: OptimizerSpec,
    limits: Limits,
    replay: ReplayBuffer | None = None,
    lr: Callable[[int], float] | None = None,
    keep_outputs: int = 0,
) -> FitResult:
    """`lr(step)` gives each step's learning rate; `replay` lends rows to every step (its
    generator is part of the transaction; its rows are added by the caller, after).
    `keep_outputs`: hand back the first forward pass's outputs for that many leading rows."""
    _refuse_outlying_targets(head, targets)
    head.backup.save(head)
    replay_rng = replay.generator.get_state() if replay else None
    taken: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (loss, grad norm, rows) per step
    kept: list[torch.Tensor] = []
    for start in range(0, inputs.shape[0], training.batch_size):
        x = inputs[start : start + training.batch_size]
        y = targets[start : start + training.batch_size]
        if head.network.normalizer is not None:
            head.network.normalizer.update(x)  # new training rows only, once: never on predict
        if head.network.target_normalizer is not None:
            head.network.target_normalizer.update(shape_targets(head.spec, y))
        for _ in range(training.steps_per_batch):
            xs, ys = _with_replay(x, y, replay, training.replay_ratio)
            if lr is not None:
                _set_lr(head, lr(head.step))
            loss, norm, outputs = _step(
                head, xs, ys, training=training, optimizer=optimizer, limits=limits
            )
            if keep_outputs and not kept:
                kept.append(outputs[:keep_outputs].detach())
            taken.append((loss, norm, xs.shape[0]))
            head.step += 1
        head.samples_seen += x.shape[0]
        crashpoints.hit("mid_step")
    losses = torch.stack([loss for loss, _, _ in taken])
    reason = _rejection_reason(head, losses, torch.stack([norm for _, norm, _ in taken]), limits)
    if reason is not None:
        head.backup.restore(head)
        if replay is not None and replay_rng is not None:
            replay.generator.set_state(replay_rng)
        raise BatchRejected(f"batch refused, nothing applied: {reason}", field="inputs")
    sizes = torch.tensor([rows for _, _, rows in taken], dtype=torch.float32)
    mean_loss = float((losses.cpu() * sizes).sum()) / float(sizes.sum())  # per row stepped on
    return FitResult(len(taken), inputs.shape[0], mean_loss, kept[0] if kept else None)


# Regression targets are learned standardized by running statistics: once those have seen
# TARGET_MIN_ROWS rows, a batch with targets beyond TARGET_OUTLIER_Z of their standard
# deviations (a unit mix-up, a poisoned label) is refused instead of being folded into the
# statistics, where it would move the scale of every later answer.
TARGET_MIN_ROWS = 16
TARGET_OUTLIER_Z = 1000.0


def _refuse_outlying_targets(head: TrainingHead, targets: torch.Tensor) -> None:
    standardizer = head.network.target_normalizer
    if standardizer is None or float(standardizer.count) < TARGET_MIN_ROWS:
        return
    z = standardizer.standardize(shape_targets(head.spec, targets).to(torch.float64))
    if bool((z.abs() > TARGET_OUTLIER_Z).any()):
        raise BatchRejected(
            "batch refused, nothing applied: targets lie beyond "
            f"{TARGET_OUTLIER_Z:g} standard deviations of the targets trained on so far",
            field="targets",
        )


def _with_replay(
    x: torch.Tensor, y: torch.Tensor, replay: ReplayBuffer | None, ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The new rows, then replayed ones (`ratio` per new row) when the buffer has any."""
    drawn = replay.sample(round(ratio * x.shape[0])) if replay is not None else None
    if drawn is None:
        return x, y
    return torch.cat([x, drawn[0]]), torch.cat([y, drawn[1].reshape(-1, *y.shape[1:])])


def _set_lr(head: TrainingHead, lr: float) -> None:
    for group in head.optimizer.param_groups:
        if group["lr"] != lr:
            group["lr"] = lr


def _step(
    head: TrainingHead,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    training: TrainingConfig,
    optimizer: OptimizerSpec,
    limits: Limits,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if training.augment_noise > 0.0:
        noise = torch.randn(x.shape, generator=head.generator, device=x.device)
        x = x + noise * training.augment_noise
    for parameter in head.parameters:  # zero_grad(set_to_none=True), without its profiler hooks
        parameter.grad = None
    with _autocast(x.device, limits.autocast):
        outputs = head.forward(x, compiled=limits.compile_training)
        loss = head.loss(*_in_loss_units(head, outputs, shape_targets(head.spec, y))).float()
    penalty = _l1_penalty(head, optimizer.l1) if optimizer.l1 > 0.0 else None
    objective = loss if penalty is None else loss + penalty
    objective.backward()
    if optimizer.clip_grad_norm is not None:
        limit = optimizer.clip_grad_norm
        norm = torch.nn.utils.clip_grad_norm_(head.parameters, limit, foreach=False)
    else:  # the refusal checks still need the norm: one fused reduction, no rescaling
        norm = _grad_norm(head)
    head.optimizer.step()
    return loss.detach(), norm.detach(), outputs


def _in_loss_units(
    head: TrainingHead, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A regression loss is taken in standardized target units, so its gradients do not
    scale with the targets' spread (reported losses stay in target units: `evaluate`)."""
    standardizer = head.network.target_normalizer
    if standardizer is None:
        return outputs, targets
    return standardizer.standardize(outputs), standardizer.standardize(targets)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """Mixed precision when `dtype` is set; entering a disabled autocast still costs a call."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _grad_norm(head: TrainingHead) -> torch.Tensor:
    grads = [p.grad for p in head.parameters if p.grad is not None]
    if not grads:
        return torch.zeros((), device=head.device)
    norm: torch.Tensor = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return norm


def _l1_penalty(head: TrainingHead, strength: float) -> torch.Tensor:
    weights = [layer.weight for layer in head.network.linear_layers()]
    return strength * torch.stack([w.abs().sum() for w in weights]).sum()


def _max_abs(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The largest |value| of all the tensors, NaN if any holds one: the larger of each one's
    maximum and minus its minimum (both propagate NaN; an absolute copy of every weight, or
    `_foreach_norm(inf)`, costs ten times as much on CPU)."""
    extremes = torch.stack([torch.stack(torch.aminmax(t)) for t in tensors]).double()
    return torch.maximum(extremes[:, 1], -extremes[:, 0]).max()


def _rejection_reason(
    head: TrainingHead, losses: torch.Tensor, norms: torch.Tensor, limits: Limits
) -> str | None:
    params = head.module_tensors[: len(head.parameters)]  # detached
    buffers = head.float_buffers  # ints are finite
    weight_max = _max_abs(params)
    checks = torch.stack(
        [
            (~torch.isfinite(losses)).any(),
            (~torch.isfinite(norms)).any(),
            norms.max() > limits.max_grad_norm,
            ~torch.isfinite(weight_max) | (weight_max > limits.max_weight_abs),
            ~torch.isfinite(_max_abs(buffers))
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
