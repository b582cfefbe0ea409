"""The race: candidate heads that learn side by side from the stream, and successive halving.

Every candidate has its own head (network, optimizer state, generator) and draws replayed rows
with its own generator from the model's one replay ring. The leader's head *is* the learner's
head, so everything that controls one model (rounds, early stopping, rollback, drift, gated
promotion) controls the race as a whole; the other live candidates train on the same rows
after the leader and are scored on the same validation rows at each round. After every
`budget` rounds the worse half (by the monitored metric) is retired, down to `survivors`;
a retired candidate's head is dropped (its device memory freed) and only its last weights are
kept, on the host, so a drift can reopen the race from them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from service.errors import BatchRejected
from service.learning.early_stopping import Mode
from service.learning.evaluation import Metrics
from service.learning.head import TrainingHead
from service.learning.race.plan import CandidatePlan, SearchConfig
from service.learning.replay import SEED_OFFSET, ReplayBuffer
from service.learning.training_config import TrainingConfig

CandidateState = Literal["live", "retired"]
MAX_HISTORY = 1000  # rounds kept per candidate (the oldest go first; snapshots hold them)
Scorer = Callable[[torch.nn.Module, Any], Metrics]
Fitter = Callable[[TrainingHead, CandidatePlan, ReplayBuffer], None]


@dataclass
class Candidate:
    plan: CandidatePlan
    head: TrainingHead | None  # None once retired: nothing of it stays on the device
    replay_rng: torch.Generator
    state: CandidateState = "live"
    retired_at: dict[str, Any] | None = None  # round, step and why
    last_weights: dict[str, torch.Tensor] | None = None  # a retired candidate's, on the host
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def index(self) -> int:
        return self.plan.index

    def score(self, metric: str) -> float | None:
        value = self.history[-1].get(f"val_{metric}") if self.history else None
        return None if value is None else float(value)


def new_candidate(plan: CandidatePlan, device: torch.device) -> Candidate:
    head = TrainingHead(plan.spec, plan.optimizer, seed=plan.seed, device=device, describe=True)
    rng = torch.Generator().manual_seed((plan.seed + SEED_OFFSET) % 2**63)  # as a lone model's
    return Candidate(plan, head, rng)


class Race:
    def __init__(
        self, config: SearchConfig, candidates: list[Candidate], *, leader: int = 0,
        rounds: int = 0,
    ) -> None:  # fmt: skip
        self.config = config
        self.candidates = candidates
        self.leader_index = leader
        self.rounds = rounds  # rounds since the race (re)opened

    @property
    def leader(self) -> Candidate:
        return self.candidates[self.leader_index]

    def live(self) -> list[Candidate]:
        return [c for c in self.candidates if c.state == "live"]

    def followers(self) -> list[Candidate]:
        return [c for c in self.live() if c.index != self.leader_index]

    # -- the stream -----------------------------------------------------------------------

    def lead(self, candidate: Candidate) -> None:
        self.leader_index = candidate.index

    def follows(self, training: TrainingConfig) -> TrainingConfig:
        """The training section the head's steps follow: the leader's own batch size."""
        return training.model_copy(update={"batch_size": self.leader.plan.batch_size})

    def train(self, replay: ReplayBuffer, fitter: Fitter, step: int) -> list[Candidate]:
        """Trains every live follower on the leader's rows; one whose batch is refused (it
        diverged) is retired, the others are unaffected. Returns the retired."""
        refused = []
        for candidate in self.followers():
            assert candidate.head is not None
            try:
                fitter(candidate.head, candidate.plan, replay.drawing_with(candidate.replay_rng))
            except BatchRejected as exc:
                self.retire(candidate, step=step, reason=f"refused: {exc.message}")
                refused.append(candidate)
        return refused

    def record_round(self, leader: Metrics, scorer: Scorer, step: int) -> None:
        self.rounds += 1
        for candidate in self.live():
            if candidate.index == self.leader_index:
                metrics = leader
            else:
                assert candidate.head is not None
                metrics = scorer(candidate.head.network, candidate.plan.spec)
            point = {"round": self.rounds, "step": step} | {
                f"val_{k}": v if math.isfinite(v) else None for k, v in metrics.items()
            }
            candidate.history = [*candidate.history[-(MAX_HISTORY - 1) :], point]

    # -- halving --------------------------------------------------------------------------

    def halving_due(self) -> bool:
        live = len(self.live())
        return live > self.config.survivors and self.rounds % self.config.budget == 0

    def ranking(self, metric: str, mode: Mode) -> list[Candidate]:
        """Live candidates, best first, by their latest score (a missing score is last)."""
        worst = math.inf if mode == "min" else -math.inf

        def key(candidate: Candidate) -> tuple[float, int]:
            score = candidate.score(metric)
            value = worst if score is None else score
            return (value if mode == "min" else -value, candidate.index)

        return sorted(self.live(), key=key)

    def losers(self, ranking: list[Candidate]) -> list[Candidate]:
        keep = max(self.config.survivors, math.ceil(len(ranking) / 2))
        return ranking[keep:]

    def retire(self, candidate: Candidate, *, step: int, reason: str) -> None:
        assert candidate.head is not None
        weights = candidate.head.network.state_dict()
        candidate.last_weights = {k: v.detach().to("cpu", copy=True) for k, v in weights.items()}
        candidate.head = None  # the network, its optimizer state and its generator go
        candidate.state = "retired"
        candidate.retired_at = {"round": self.rounds, "step": step, "reason": reason}

    def reopen(self, device: torch.device) -> list[Candidate]:
        """Brings the retired back from their last weights (fresh optimizer state)."""
        back = [c for c in self.candidates if c.state == "retired"]
        for candidate in back:
            fresh = new_candidate(candidate.plan, device)
            assert fresh.head is not None
            assert candidate.last_weights is not None
            with torch.no_grad():
                fresh.head.network.load_state_dict(candidate.last_weights)
            candidate.head, candidate.state = fresh.head, "live"
            candidate.retired_at, candidate.last_weights = None, None
        self.rounds = 0
        return back

    def view(self) -> list[dict[str, Any]]:
        return [
            candidate.plan.describe() | {
                "state": candidate.state, "leader": candidate.index == self.leader_index,
                "retired_at": candidate.retired_at, "history": list(candidate.history),
            }
            for candidate in self.candidates
        ]  # fmt: skip
