"""What a round records: the round event's data and a learning-rate reduction's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.learning.evaluation import Metrics
from service.learning.head import TrainingHead
from service.learning.rules import finite_or_none


def round_record(
    head: TrainingHead, metrics: Metrics, losses: list[tuple[float, int]],
    lr_at: Callable[[int], float],
) -> dict[str, Any]:  # fmt: skip
    """The round event's data; empties `losses`, the (mean loss, rows) of each batch trained
    since the last round."""
    rows = sum(n for _, n in losses)
    loss = sum(v * n for v, n in losses) / rows if rows else None
    losses.clear()
    return {
        "step": head.step, "samples_seen": head.samples_seen, "train_loss": loss,
        "lr": lr_at(max(head.step - 1, 0)),  # the rate of the round's last step
        **{f"val_{k}": finite_or_none(v) for k, v in metrics.items()},
    }  # fmt: skip


def lr_reduction(step: int, before: float, after: float, score: float) -> dict[str, Any] | None:
    """The `lr_reduced` event's data when the round lowered the rate."""
    if after >= before:
        return None
    return {"step": step, "from_lr": before, "lr": after, "score": finite_or_none(score)}
