"""The race's pure parts: ranking, halving arithmetic, retirement and reopening."""

from __future__ import annotations

import pytest
import torch

from models.spec import NetworkSpec, OptimizerSpec
from service.learning.early_stopping import Mode
from service.learning.race.candidates import Candidate, Race, new_candidate
from service.learning.race.plan import CandidatePlan, SearchConfig

SPEC = NetworkSpec(task="classification", inputs=4, outputs=3, hidden=[8])
CPU = torch.device("cpu")


def race_of(scores: list[float | None], *, survivors: int = 1, budget: int = 1) -> Race:
    candidates: list[Candidate] = []
    for index, score in enumerate(scores):
        plan = CandidatePlan(index, {}, SPEC, OptimizerSpec(), 16, 0)
        candidate = new_candidate(plan, CPU)
        if score is not None:
            candidate.history.append({"round": 1, "step": 1, "val_loss": score})
        candidates.append(candidate)
    config = SearchConfig(variations=[{}] * len(scores), budget=budget, survivors=survivors)
    return Race(config, candidates)


@pytest.mark.parametrize(
    ("scores", "mode", "survivors", "ranked", "retired"),
    [
        ([0.5, 0.2, 0.9, 0.1], "min", 1, [3, 1, 0, 2], [0, 2]),
        ([0.5, 0.2, 0.9, 0.1], "max", 1, [2, 0, 1, 3], [1, 3]),
        ([0.5, 0.2, 0.9], "min", 1, [1, 0, 2], [2]),  # the better half rounds up
        ([0.5, 0.2, 0.9, 0.1], "min", 3, [3, 1, 0, 2], [2]),  # never below `survivors`
        ([0.5, None, 0.9], "min", 1, [0, 2, 1], [1]),  # no score yet: last
        ([0.3, 0.3, 0.1], "min", 1, [2, 0, 1], [1]),  # a tie keeps the lower index
    ],
)
def test_halving_ranks_by_latest_score_and_retires_the_worse_half(
    scores: list[float | None], mode: Mode, survivors: int, ranked: list[int], retired: list[int]
) -> None:
    race = race_of(scores, survivors=survivors)
    ranking = race.ranking("loss", mode)
    assert [c.index for c in ranking] == ranked
    assert sorted(c.index for c in race.losers(ranking)) == retired


def test_halving_is_due_every_budget_rounds_while_more_than_survivors_live() -> None:
    race = race_of([0.1, 0.2], budget=3)
    due = []
    for _ in range(6):
        race.rounds += 1
        due.append(race.halving_due())
    assert due == [False, False, True, False, False, True]
    race.retire(race.candidates[1], step=6, reason="test")
    assert not race.halving_due()


def test_reopen_brings_the_retired_back_from_their_last_weights() -> None:
    race = race_of([0.1, 0.2, 0.3])
    head = race.candidates[2].head
    assert head is not None
    with torch.no_grad():
        for parameter in head.network.parameters():
            parameter.add_(1.0)  # learned something the seed does not give
    weights = {k: v.clone() for k, v in head.network.state_dict().items()}
    race.rounds = 4
    race.retire(race.candidates[2], step=9, reason="halving")
    assert race.candidates[2].head is None
    assert race.candidates[2].retired_at == {"round": 4, "step": 9, "reason": "halving"}
    back = race.reopen(CPU)
    assert [c.index for c in back] == [2]
    reopened = race.candidates[2]
    assert (reopened.state, reopened.retired_at, race.rounds) == ("live", None, 0)
    assert reopened.head is not None
    state = reopened.head.network.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
