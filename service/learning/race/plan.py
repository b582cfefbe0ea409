"""The `search` section of a new model: candidates that race on the stream, and its budget.

A search is the model's own spec, optimizer and training section (the base) plus variations:
either a grid (each field → the values to try; every combination is a candidate) or a list of
override dicts (one candidate each; `{}` is the base itself). Only the fields below may vary.
Each candidate's spec is validated like a model's, and an error names the field that failed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError

from models.spec import NetworkSpec, OptimizerSpec, StrictModel
from service.errors import InvalidInput
from service.learning.training_config import TrainingConfig

MAX_CANDIDATES = 16
# Field of a variation → (section, key) of the base it overrides.
VARIABLE: dict[str, tuple[str, str]] = {
    "hidden": ("spec", "hidden"),
    "activation": ("spec", "activation"),
    "dropout": ("spec", "dropout"),
    "optimizer.name": ("optimizer", "name"),
    "optimizer.lr": ("optimizer", "lr"),
    "weight_decay": ("optimizer", "weight_decay"),
    "batch_size": ("training", "batch_size"),
}


class SearchConfig(StrictModel):
    variations: dict[str, list[Any]] | list[dict[str, Any]] = Field(
        description="A grid (field → values; every combination races) or a list of overrides."
    )
    budget: int = Field(
        default=4, ge=1, le=100_000, description="Evaluation rounds per halving period."
    )
    survivors: int = Field(
        default=1, ge=1, le=MAX_CANDIDATES, description="Candidates left when the race ends."
    )


@dataclass(frozen=True)
class CandidatePlan:
    """One candidate: its overrides over the base and what they resolve to."""

    index: int
    overrides: dict[str, Any]
    spec: NetworkSpec
    optimizer: OptimizerSpec
    batch_size: int
    seed: int

    def describe(self) -> dict[str, Any]:
        return {
            "index": self.index, "overrides": self.overrides, "spec": self.spec.model_dump(),
            "optimizer": self.optimizer.model_dump(), "batch_size": self.batch_size,
            "seed": self.seed,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidatePlan:
        return cls(
            index=int(data["index"]), overrides=dict(data["overrides"]),
            spec=NetworkSpec.model_validate(data["spec"]),
            optimizer=OptimizerSpec.model_validate(data["optimizer"]),
            batch_size=int(data["batch_size"]), seed=int(data["seed"]),
        )  # fmt: skip


def plan_candidates(
    search: SearchConfig, *, spec: NetworkSpec, optimizer: OptimizerSpec,
    training: TrainingConfig, seed: int,
) -> list[CandidatePlan]:  # fmt: skip
    """The candidates of a search, or `InvalidInput` naming the first field at fault."""
    overrides = _overrides(search.variations)
    if len(overrides) < 2 or len(overrides) > MAX_CANDIDATES:
        raise InvalidInput(
            f"a search races 2 to {MAX_CANDIDATES} candidates, not {len(overrides)}",
            field="search.variations",
        )
    if search.survivors >= len(overrides):
        raise InvalidInput(
            f"survivors must be fewer than the {len(overrides)} candidates",
            field="search.survivors",
        )
    base = {
        "spec": spec.model_dump(), "optimizer": optimizer.model_dump(),
        "training": {"batch_size": training.batch_size},
    }  # fmt: skip
    return [_plan(index, changes, base, seed) for index, changes in enumerate(overrides)]


def _overrides(variations: dict[str, list[Any]] | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(variations, list):
        for position, changes in enumerate(variations):
            _known(changes, f"search.variations.{position}")
        return [dict(changes) for changes in variations]
    _known(variations, "search.variations")
    for key, values in variations.items():
        if not values:
            raise InvalidInput(f"{key} lists no values", field=f"search.variations.{key}")
    keys = list(variations)
    combinations = itertools.islice(
        itertools.product(*variations.values()), MAX_CANDIDATES + 1
    )  # never expand a huge grid just to refuse it
    return [dict(zip(keys, values, strict=True)) for values in combinations]


def _known(changes: dict[str, Any], field: str) -> None:
    for key in changes:
        if key not in VARIABLE:
            allowed = ", ".join(VARIABLE)
            raise InvalidInput(f"{key!r} cannot vary (only {allowed})", field=f"{field}.{key}")


def _plan(index: int, changes: dict[str, Any], base: dict[str, Any], seed: int) -> CandidatePlan:
    sections = {name: dict(values) for name, values in base.items()}
    for key, value in changes.items():
        section, name = VARIABLE[key]
        sections[section][name] = value
    field = f"search.variations.{index}"
    try:
        spec = NetworkSpec.model_validate(sections["spec"])
        optimizer = OptimizerSpec.model_validate(sections["optimizer"])
        batch = TrainingConfig.model_validate(sections["training"]).batch_size
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"{field}.{where}: {first['msg']}", field=f"{field}.{where}") from None
    # Every candidate shares the model's seed (common random numbers: the same first draws, so
    # candidates differ by their hyper-parameters only, and each one trains exactly as the
    # same spec would alone).
    return CandidatePlan(index, changes, spec, optimizer, batch, seed)
