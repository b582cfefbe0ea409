"""Tables of example specs for the network contract suite, derived from the spec's `Literal`s.

A name added to `Activation`, `Init`, `OptimizerName`, `Task` or `Loss` in `models/spec.py`
shows up in every table here, and so in every check that runs over them.
"""

from __future__ import annotations

from typing import Any, get_args

import pytest
import torch
from _pytest.mark import ParameterSet

from models.losses import target_dtype
from models.spec import Activation, Init, Loss, NetworkSpec, OptimizerName, OptimizerSpec, Task

TASKS: tuple[str, ...] = get_args(Task)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
INITS: tuple[str, ...] = get_args(Init)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerName)
LOSSES: tuple[str, ...] = get_args(Loss)

INPUTS = 3
ROWS = 8


def outputs_for(task: str) -> int:
    """The smallest output count the task accepts: a new task needs no edit here."""
    for outputs in (1, 2, 3):
        try:
            NetworkSpec(task=task, inputs=INPUTS, outputs=outputs)  # type: ignore[arg-type]
        except ValueError:
            continue
        return outputs
    raise AssertionError(f"no output count in 1..3 fits task {task!r}")


def network_spec(**overrides: Any) -> NetworkSpec:
    """A tiny valid spec; overrides win (a task override brings its own output count)."""
    task = overrides.get("task", "regression")
    values: dict[str, Any] = {
        "task": task,
        "inputs": INPUTS,
        "outputs": outputs_for(task),
        "hidden": [4],
    }
    values.update(overrides)
    return NetworkSpec.model_validate(values)


def optimizer_spec(**overrides: Any) -> OptimizerSpec:
    return OptimizerSpec.model_validate({"lr": 0.01, **overrides})


def network_examples() -> list[ParameterSet]:
    """Every task, activation and init at least once, plus the structural corner cases."""
    examples = [pytest.param(network_spec(task=t), id=f"task={t}") for t in TASKS]
    examples += [
        pytest.param(network_spec(activation=a, hidden=[4, 4]), id=f"activation={a}")
        for a in ACTIVATIONS
    ]
    examples += [pytest.param(network_spec(init=i), id=f"init={i}") for i in INITS]
    examples += [
        pytest.param(network_spec(outputs=2), id="regression-2-targets"),
        pytest.param(network_spec(hidden=[]), id="linear"),
        pytest.param(network_spec(normalize=False), id="no-normalizer"),
        pytest.param(network_spec(dropout=0.5, hidden=[5, 3]), id="dropout"),
        pytest.param(network_spec(task="classification", dropout=0.25), id="classifier-dropout"),
    ]
    return examples


def task_loss_pairs(*, accepted: bool) -> list[tuple[str, str]]:
    """Every (task, loss) pair the spec accepts, or every pair it refuses."""
    pairs = [(task, loss) for task in TASKS for loss in LOSSES]
    return [(task, loss) for task, loss in pairs if _accepts(task, loss) == accepted]


def _accepts(task: str, loss: str) -> bool:
    try:
        network_spec(task=task, loss=loss)
    except ValueError:
        return False
    return True


def optimizer_examples() -> list[ParameterSet]:
    """Every optimizer with its defaults, plus the options that change its state's layout."""
    examples = [pytest.param(optimizer_spec(name=n), id=f"optimizer={n}") for n in OPTIMIZERS]
    examples += [
        pytest.param(optimizer_spec(name="sgd", momentum=0.9, nesterov=True), id="sgd-nesterov"),
        pytest.param(optimizer_spec(name="rmsprop", momentum=0.5), id="rmsprop-momentum"),
        pytest.param(optimizer_spec(name="adamw", weight_decay=0.1), id="adamw-decay"),
    ]
    return examples


def inputs(rows: int = ROWS, *, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, INPUTS, generator=generator) * 3.0 + 1.0


def targets(spec: NetworkSpec, rows: int = ROWS, *, seed: int = 1) -> torch.Tensor:
    """Targets in the layout clients send: class ids, 0/1 labels, or (rows, outputs) values."""
    generator = torch.Generator().manual_seed(seed)
    if spec.task == "regression":
        return torch.randn(rows, spec.outputs, generator=generator)
    classes = 2 if spec.task == "binary" else spec.outputs
    labels = torch.randint(0, classes, (rows,), generator=generator)
    return labels.to(target_dtype(spec))
