"""A race's part of each batch and round, as decisions the learner applies: followers train
after the leader, rounds score them all on the same validation rows, and each budget period
ends with a halving that may hand the head (and, through gated promotion, the served version)
to a better candidate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from service.learning.evaluation import Metrics
from service.learning.head import TrainingHead
from service.learning.race.candidates import Candidate, Race, Scorer
from service.learning.race.plan import CandidatePlan
from service.learning.replay import ReplayBuffer
from service.learning.schedule import Plateau, learning_rate
from service.learning.trainer import Limits, fit
from service.learning.training_config import TrainingConfig


@dataclass(frozen=True)
class Halving:
    """The end of a budget period: the candidates best first, and those to retire."""

    ranking: list[Candidate]
    losers: list[Candidate]

    @property
    def leader(self) -> Candidate:
        return self.ranking[0]


def train_followers(
    race: Race, x: torch.Tensor, y: torch.Tensor, *, replay: ReplayBuffer,
    training: TrainingConfig, plateau: Plateau, limits: Limits, step: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """The leader's training rows, for every other live candidate (before they join replay);
    returns the candidates retired because they refused the batch."""
    schedule = training.schedule()

    def fitter(head: TrainingHead, plan: CandidatePlan, replay: ReplayBuffer) -> None:
        fit(
            head, x, y, training=training.model_copy(update={"batch_size": plan.batch_size}),
            optimizer=plan.optimizer, limits=limits, replay=replay,
            lr=lambda step: learning_rate(schedule, plan.optimizer.lr, step=step, plateau=plateau),
        )  # fmt: skip

    return [retired(c) for c in race.train(replay, fitter, step)]


def score_round(
    race: Race, leader: Metrics, scorer: Scorer, *, step: int, training: TrainingConfig
) -> Halving | None:
    """Records the round's scores of every candidate; a halving when one is due."""
    race.record_round(leader, scorer, step)
    if not race.halving_due():
        return None
    ranking = race.ranking(training.metric, training.resolved_mode)
    return Halving(ranking, race.losers(ranking))


def retire_losers(race: Race, halving: Halving, *, step: int, metric: str) -> dict[str, Any]:
    """Retires the halving's losers; returns the `race_halved` event's data."""
    for candidate in halving.losers:
        score = candidate.score(metric)
        shown = "none" if score is None else f"{score:.4g}"
        race.retire(candidate, step=step, reason=f"halving: val_{metric} {shown}")
    return {
        "step": step, "round": race.rounds, "leader": race.leader_index,
        "ranking": [{"index": c.index, f"val_{metric}": c.score(metric)} for c in halving.ranking],
        "retired": [retired(c) for c in halving.losers],
    }  # fmt: skip


def retired(candidate: Candidate) -> dict[str, Any]:
    return {"index": candidate.index, **(candidate.retired_at or {})}
