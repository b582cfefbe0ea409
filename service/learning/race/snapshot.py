"""A race in a recovery snapshot: every candidate's plan, state and curve in the JSON header,
the followers' heads and the retired candidates' last weights as tensors.

The leader's head is the learner's and is stored with it. Restoring builds every candidate
afresh and loads the followers, so a replay of the log after the snapshot is bit-exact.
"""

from __future__ import annotations

from typing import Any

import torch

from service.learning.race.candidates import Candidate, Race, new_candidate
from service.learning.race.plan import CandidatePlan, SearchConfig
from service.storage.weights import Checkpoint


def capture_race(race: Race) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    tensors: dict[str, torch.Tensor] = {}
    described = []
    for candidate in race.candidates:
        prefix = f"race/{candidate.index}"
        tensors[f"{prefix}/replay_rng"] = candidate.replay_rng.get_state()
        head: dict[str, Any] | None = None
        if candidate.head is not None and candidate.index != race.leader_index:
            head = _flatten(prefix, candidate.head.checkpoint(), tensors)
        for key, value in (candidate.last_weights or {}).items():
            tensors[f"{prefix}/last/{key}"] = value
        described.append(
            {
                "plan": candidate.plan.describe(), "state": candidate.state,
                "retired_at": candidate.retired_at, "history": candidate.history, "head": head,
            }
        )  # fmt: skip
    meta = {
        "config": race.config.model_dump(), "leader": race.leader_index, "rounds": race.rounds,
        "candidates": described,
    }  # fmt: skip
    return meta, tensors


def restore_race(snapshot: Checkpoint, device: torch.device) -> Race:
    meta: dict[str, Any] = snapshot.meta["race"]
    candidates = [_candidate(data, snapshot.extra, device) for data in meta["candidates"]]
    config = SearchConfig.model_validate(meta["config"])
    return Race(config, candidates, leader=int(meta["leader"]), rounds=int(meta["rounds"]))


def _candidate(
    data: dict[str, Any], extra: dict[str, torch.Tensor], device: torch.device
) -> Candidate:
    plan = CandidatePlan.from_dict(data["plan"])
    prefix = f"race/{plan.index}"
    candidate = new_candidate(plan, device)
    candidate.replay_rng.set_state(extra[f"{prefix}/replay_rng"])
    candidate.state, candidate.retired_at = data["state"], data["retired_at"]
    candidate.history = list(data["history"])
    if data["state"] == "retired":
        candidate.head = None
        last = f"{prefix}/last/"
        candidate.last_weights = {
            k.removeprefix(last): v for k, v in extra.items() if k.startswith(last)
        }
    elif data["head"] is not None:
        assert candidate.head is not None
        candidate.head.load_checkpoint(_unflatten(prefix, data["head"], extra))
    return candidate


def _flatten(
    prefix: str, checkpoint: Checkpoint, tensors: dict[str, torch.Tensor]
) -> dict[str, Any]:
    tensors.update({f"{prefix}/network/{k}": v for k, v in checkpoint.network.items()})
    scalars: dict[str, dict[str, Any]] = {}
    for index, state in checkpoint.optimizer["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/optimizer/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    tensors[f"{prefix}/rng"] = checkpoint.rng
    return {
        "param_groups": checkpoint.optimizer["param_groups"], "scalars": scalars,
        "meta": {"step": checkpoint.meta["step"], "samples_seen": checkpoint.meta["samples_seen"]},
    }  # fmt: skip


def _unflatten(prefix: str, head: dict[str, Any], extra: dict[str, torch.Tensor]) -> Checkpoint:
    network: dict[str, torch.Tensor] = {}
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in head["scalars"].items()}
    for name, tensor in extra.items():
        if not name.startswith(prefix + "/"):
            continue
        kind, _, rest = name.removeprefix(prefix + "/").partition("/")
        if kind == "network":
            network[rest] = tensor
        elif kind == "optimizer":
            index, _, key = rest.partition("/")
            state.setdefault(int(index), {})[key] = tensor
    optimizer = {"state": state, "param_groups": head["param_groups"]}
    return Checkpoint(network, optimizer, extra[f"{prefix}/rng"], head["meta"])
