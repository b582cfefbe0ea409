"""Prequential (test-then-train) scoring: each batch is scored by the head before it trains."""

from __future__ import annotations

import numpy as np

from service.learning.head import TrainingHead
from service.learning.trainer import Limits
from service.learning.training_config import TrainingConfig


def scored_by_first_step(
    held_out: np.ndarray, training: TrainingConfig, limits: Limits, head: TrainingHead
) -> bool:
    """Whether the first training step's forward pass is the prequential score: it runs on
    the head before any step, and here nothing makes it differ from `evaluate`'s pass (no
    held-out row, one mini-batch, no dropout, normalizers, noise, autocast or compiled
    step, whose rounding may differ), so the batch is scored without a pass of its own."""
    network = head.network
    return (
        not held_out.any()
        and held_out.shape[0] <= training.batch_size
        and network.normalizer is None
        and network.target_normalizer is None
        and head.spec.dropout == 0.0
        and training.augment_noise == 0.0
        and limits.autocast is None
        and not limits.compile_training
    )
