"""The validation buffer as a yardstick: what rounds, rollbacks, stops and drift checks score
networks on. A frozen view of the learner's spec, training section and buffer, taken when
needed, so it never outlives a reconfiguration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from models.spec import NetworkSpec
from service.learning.buffer import ValidationBuffer
from service.learning.evaluation import Metrics, evaluate, metrics_of, outputs_of, paired, spread
from service.learning.rules import (
    Spread,
    needs_evidence,
    rollback_reason,
    significant_drift,
    significantly_worse,
)
from service.learning.training_config import TrainingConfig

BestNetwork = Callable[[], nn.Module]  # built only when the paired test needs it


@dataclass(frozen=True)
class Yardstick:
    spec: NetworkSpec
    training: TrainingConfig
    buffer: ValidationBuffer

    def metrics(self, network: nn.Module) -> Metrics:
        """Every metric on the whole buffer (the buffer must hold rows)."""
        return self.scored(network)[0]

    def scored(self, network: nn.Module) -> tuple[Metrics, torch.Tensor]:
        """`metrics`, and the outputs they came from (for a paired test on the same rows)."""
        x, y = self.buffer.tensors()
        outputs = outputs_of(network, x)
        return metrics_of(self.spec, outputs, y), outputs

    def validation_metrics(self, network: nn.Module) -> Metrics:
        """`val_`-prefixed metrics, empty while the buffer is."""
        if self.buffer.size == 0:
            return {}
        return {f"val_{k}": v for k, v in self.metrics(network).items()}

    def score(self, network: nn.Module) -> float | None:
        """The monitored metric on the whole buffer, None while it is empty."""
        if self.buffer.size == 0:
            return None
        return self.metrics(network)[self.training.metric]

    def score_newest(self, network: nn.Module, rows: int) -> float:
        x, y = self.buffer.newest(min(rows, self.buffer.size))
        return evaluate(network, self.spec, x, y)[self.training.metric]

    def spread(self, network: nn.Module, rows: int | None = None) -> Spread | None:
        """Per-row mean and standard error of the monitored metric, on the newest `rows` rows
        (all of them by default); None without `evidence` or an empty buffer."""
        if self.training.evidence is None or self.buffer.size == 0:
            return None
        x, y = self.buffer.tensors() if rows is None else self.buffer.newest(rows)
        return spread(network, self.spec, self.training.metric, x, y)

    def rollback_reason(
        self, score: float, best_score: float | None, head: nn.Module | torch.Tensor,
        best: BestNetwork,
    ) -> str | None:  # fmt: skip
        """The relative rule, then (unless the round is catastrophic) the paired test: the
        head (or its outputs on the buffer) against the best version row by row on the same
        validation rows."""
        mode, tolerance = self.training.resolved_mode, self.training.rollback_tolerance
        reason = rollback_reason(score, best_score, mode, tolerance)
        evidence = self.training.evidence
        if reason != "degraded" or evidence is None or tolerance is None:
            return reason
        assert best_score is not None
        if not needs_evidence(score, best_score, mode, evidence):
            return reason
        found = paired(head, best(), self.spec, self.training.metric, *self.buffer.tensors())
        if found is None or significantly_worse(found, mode, tolerance, evidence):
            return reason
        return None

    def drift_is_significant(
        self, served: nn.Module, fresh_rows: int, at_stop: list[float] | None
    ) -> bool:
        """A relative drift, confirmed against the noise when `evidence` is set: the served
        version on the fresh rows against itself on the rows at the stop."""
        evidence = self.training.evidence
        if evidence is None or at_stop is None or self.training.drift_min_rows == 0:
            return True
        fresh = self.spread(served, min(fresh_rows, self.buffer.size))
        if fresh is None:
            return True
        return significant_drift(fresh, Spread(*at_stop), self.training.resolved_mode, evidence)
