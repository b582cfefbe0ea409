"""How a learner runs its race: followers train after the leader, rounds score them all on the
same validation rows, and each budget period ends with a halving that may hand the head (and,
through gated promotion, the served version) to a better candidate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from service.learning.evaluation import Metrics, evaluate
from service.learning.head import TrainingHead
from service.learning.race.candidates import Race
from service.learning.race.plan import CandidatePlan
from service.learning.replay import ReplayBuffer
from service.learning.schedule import learning_rate
from service.learning.trainer import fit

if TYPE_CHECKING:
    from service.learning.learner import OnlineLearner


def train_followers(learner: OnlineLearner, race: Race, x: torch.Tensor, y: torch.Tensor) -> None:
    """The leader's training rows, for every other live candidate (before they join replay)."""

    def fitter(head: TrainingHead, plan: CandidatePlan, replay: ReplayBuffer) -> None:
        schedule, plateau = learner.training.schedule(), learner.control.plateau
        training = learner.training.model_copy(update={"batch_size": plan.batch_size})
        fit(
            head, x, y, training=training,
            optimizer=plan.optimizer, limits=learner.limits, replay=replay,
            lr=lambda step: learning_rate(schedule, plan.optimizer.lr, step=step, plateau=plateau),
        )  # fmt: skip

    refused = race.train(learner.replay, fitter, learner.head.step)
    if refused:
        data = {"step": learner.head.step, "retired": [_retired(c) for c in refused]}
        learner.recorder.event("race_retired", learner.head_version, data)


def race_round(learner: OnlineLearner, race: Race, leader: Metrics) -> None:
    x, y = learner.buffer.tensors()
    race.record_round(leader, lambda net, spec: evaluate(net, spec, x, y), learner.head.step)
    if not race.halving_due():
        return
    metric, mode = learner.training.metric, learner.training.resolved_mode
    ranking = race.ranking(metric, mode)
    losers = race.losers(ranking)
    if ranking[0].index != race.leader_index:
        learner.switch_leader(ranking[0])
    for candidate in losers:
        score = candidate.score(metric)
        shown = "none" if score is None else f"{score:.4g}"
        race.retire(candidate, step=learner.head.step, reason=f"halving: val_{metric} {shown}")
    data = {
        "step": learner.head.step, "round": race.rounds, "leader": race.leader_index,
        "ranking": [{"index": c.index, f"val_{metric}": c.score(metric)} for c in ranking],
        "retired": [_retired(c) for c in losers],
    }  # fmt: skip
    learner.recorder.event("race_halved", learner.head_version, data)


def _retired(candidate: Any) -> dict[str, Any]:
    return {"index": candidate.index, **(candidate.retired_at or {})}
