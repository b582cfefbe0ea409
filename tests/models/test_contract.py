"""The contract every network built from a spec must keep, checked over a table of examples.

Each check runs over every example in `examples.network_examples()` (every task, activation
and init) or over every optimizer; the tables come from the spec's `Literal`s, so a name added
there is checked here without an edit.
"""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from models.activations import ACTIVATIONS as ACTIVATION_REGISTRY
from models.losses import make_loss, shape_targets
from models.network import Network, SeededDropout, build_network
from models.optimizers import FUSED, build_optimizer
from models.spec import NetworkSpec, OptimizerSpec
from tests.models.examples import (
    ACTIVATIONS,
    INITS,
    OPTIMIZERS,
    ROWS,
    inputs,
    network_examples,
    network_spec,
    optimizer_examples,
    optimizer_spec,
    targets,
    task_loss_pairs,
)

EVERY_SPEC = pytest.mark.parametrize("spec", network_examples())
EVERY_OPTIMIZER = pytest.mark.parametrize("optimizer", optimizer_examples())


def train_step(
    network: Network, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> float:
    """One step as the trainer takes it: statistics first, then forward, backward, step."""
    spec = network.spec
    if network.normalizer is not None:
        network.normalizer.update(x)
    optimizer.zero_grad(set_to_none=True)
    loss = make_loss(spec)(network(x), shape_targets(spec, y))
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def trained(spec: NetworkSpec, *, seed: int = 0) -> Network:
    network = build_network(spec, seed=seed)
    network.train()
    optimizer = build_optimizer(optimizer_spec(), network.parameters())
    train_step(network, optimizer, inputs(), targets(spec))
    return network


def predict(network: Network, x: torch.Tensor) -> torch.Tensor:
    network.eval()
    with torch.no_grad():
        return network(x)


def test_activation_registry_covers_exactly_the_spec_literal() -> None:
    assert set(ACTIVATION_REGISTRY) == set(ACTIVATIONS)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("init", INITS)
def test_every_activation_and_init_builds_with_finite_outputs_of_declared_shape(
    activation: str, init: str
) -> None:
    spec = network_spec(activation=activation, init=init, hidden=[5, 4], outputs=2)
    network = build_network(spec, seed=0)
    out = predict(network, inputs())
    assert out.shape == (ROWS, 2)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("init", [i for i in INITS if i != "default"])
def test_explicit_init_zeroes_every_bias(init: str) -> None:
    network = build_network(network_spec(init=init, hidden=[5, 4]), seed=0)
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in network.linear_layers())


@EVERY_SPEC
def test_layers_follow_the_spec(spec: NetworkSpec) -> None:
    network = build_network(spec, seed=0)
    widths = [(layer.in_features, layer.out_features) for layer in network.linear_layers()]
    sizes = [spec.inputs, *spec.hidden, spec.outputs]
    assert widths == list(itertools.pairwise(sizes))
    assert (network.normalizer is not None) == spec.normalize
    dropouts = [m for m in network.modules() if isinstance(m, SeededDropout)]
    assert len(dropouts) == (len(spec.hidden) if spec.dropout > 0.0 else 0)


@EVERY_SPEC
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_does_not_mutate_inputs(spec: NetworkSpec, mode: str) -> None:
    network = trained(spec)
    network.train(mode == "train")
    x = inputs()
    original = x.clone()
    network(x)
    assert torch.equal(x, original)


@EVERY_SPEC
def test_training_step_does_not_mutate_inputs_or_targets(spec: NetworkSpec) -> None:
    network = build_network(spec, seed=0)
    network.train()
    optimizer = build_optimizer(optimizer_spec(), network.parameters())
    x, y = inputs(), targets(spec)
    x_before, y_before = x.clone(), y.clone()
    train_step(network, optimizer, x, y)
    assert torch.equal(x, x_before)
    assert torch.equal(y, y_before)


@EVERY_SPEC
def test_backward_gives_finite_gradients_for_every_parameter(spec: NetworkSpec) -> None:
    network = build_network(spec, seed=0)
    network.train()
    if network.normalizer is not None:
        network.normalizer.update(inputs())
    loss = make_loss(spec)(network(inputs()), shape_targets(spec, targets(spec)))
    loss.backward()
    assert torch.isfinite(loss)
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


@EVERY_SPEC
def test_save_then_load_predicts_identically(spec: NetworkSpec) -> None:
    original = trained(spec, seed=0)
    saved = load_tensors(save_tensors(original.state_dict()))
    restored = build_network(spec, seed=1)  # a different seed: everything must come from disk
    restored.load_state_dict(saved)
    x = inputs(seed=5)
    assert torch.equal(predict(restored, x), predict(original, x))


@EVERY_SPEC
def test_state_dict_holds_every_parameter_and_statistic(spec: NetworkSpec) -> None:
    # These keys are the checkpoint format: renaming a layer orphans every stored version.
    state = build_network(spec, seed=0).state_dict()
    parameters = {f"layers.{i}.{p}" for i in _linear_indices(spec) for p in ("weight", "bias")}
    statistics = {f"normalizer.{b}" for b in ("count", "mean", "m2")} if spec.normalize else set()
    if spec.task == "regression" and spec.normalize_target:
        statistics |= {f"target_normalizer.{b}" for b in ("count", "mean", "m2")}
    assert set(state) == parameters | statistics


def _linear_indices(spec: NetworkSpec) -> list[int]:
    per_hidden = 3 if spec.dropout > 0.0 else 2
    return [per_hidden * i for i in range(len(spec.hidden) + 1)]


@EVERY_SPEC
def test_same_seed_builds_identical_networks_and_outputs(spec: NetworkSpec) -> None:
    first, second = build_network(spec, seed=7), build_network(spec, seed=7)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    first.train()
    second.train()
    x = inputs()
    assert torch.equal(first(x), second(x))  # dropout masks included
    assert torch.equal(first(x), second(x))


@EVERY_SPEC
def test_different_seeds_build_different_weights(spec: NetworkSpec) -> None:
    first, second = build_network(spec, seed=7), build_network(spec, seed=8)
    weights = zip(first.linear_layers(), second.linear_layers(), strict=True)
    assert any(not torch.equal(a.weight, b.weight) for a, b in weights)


@EVERY_SPEC
def test_build_and_forward_leave_the_global_rng_untouched(spec: NetworkSpec) -> None:
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    network = build_network(spec, seed=0)
    network.train()
    network(inputs())
    assert torch.equal(torch.rand(3), expected)


@EVERY_SPEC
def test_eval_forward_is_deterministic(spec: NetworkSpec) -> None:
    network = trained(spec)
    x = inputs(seed=3)
    assert torch.equal(predict(network, x), predict(network, x))


@pytest.mark.parametrize(("task", "loss"), task_loss_pairs(accepted=True))
def test_every_accepted_task_and_loss_trains_with_finite_loss(task: str, loss: str) -> None:
    spec = network_spec(task=task, loss=loss)
    network = build_network(spec, seed=0)
    optimizer = build_optimizer(optimizer_spec(), network.parameters())
    loss_value = train_step(network, optimizer, inputs(), targets(spec))
    assert torch.isfinite(torch.tensor(loss_value))


# --- optimizers -------------------------------------------------------------------------


def learnable_problem() -> tuple[torch.Tensor, torch.Tensor]:
    """y = x·w + b exactly: a linear network can drive the loss to zero."""
    x = inputs(32, seed=11)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.25
    return x, y


def mse(network: Network, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(network(x), y))


@EVERY_OPTIMIZER
def test_every_optimizer_reduces_loss_on_a_learnable_problem(optimizer: OptimizerSpec) -> None:
    network = build_network(network_spec(hidden=[], normalize=False), seed=0)
    torch_optimizer = build_optimizer(optimizer, network.parameters())
    x, y = learnable_problem()
    before = mse(network, x, y)
    for _ in range(5):
        torch_optimizer.zero_grad()
        torch.nn.functional.mse_loss(network(x), y).backward()
        torch_optimizer.step()
    after = mse(network, x, y)
    assert after < before
    assert all(torch.isfinite(p).all() for p in network.parameters())


@EVERY_OPTIMIZER
def test_optimizer_takes_its_hyperparameters_from_the_spec(optimizer: OptimizerSpec) -> None:
    network = build_network(network_spec(), seed=0)
    (group,) = build_optimizer(optimizer, network.parameters()).param_groups
    assert group["lr"] == optimizer.lr
    assert group["weight_decay"] == optimizer.weight_decay
    # An explicit kernel, never the device's default: identical arithmetic on replay.
    assert group["fused"] is True if optimizer.name in FUSED else group["foreach"] is False
    assert len(group["params"]) == len(list(network.parameters()))


def test_a_state_saved_by_the_single_tensor_kernel_keeps_it_once_loaded() -> None:
    """A snapshot or version written before Adam took the fused kernel replays as it ran."""
    x = inputs()
    old_network = build_network(network_spec(), seed=0)
    old = torch.optim.Adam(old_network.parameters(), lr=0.01, foreach=False)
    _steps(old_network, old, x, 2)
    new_network = build_network(network_spec(), seed=0)
    new_network.load_state_dict(old_network.state_dict())
    new = build_optimizer(OptimizerSpec(name="adam", lr=0.01), new_network.parameters())
    new.load_state_dict(copy.deepcopy(old.state_dict()))
    _steps(old_network, old, x, 3)
    _steps(new_network, new, x, 3)
    for before, after in zip(old_network.parameters(), new_network.parameters(), strict=True):
        assert torch.equal(before, after)


def _steps(network: Network, optimizer: torch.optim.Optimizer, x: torch.Tensor, n: int) -> None:
    for _ in range(n):
        optimizer.zero_grad(set_to_none=True)
        (network(x) ** 2).mean().backward()
        optimizer.step()


def test_optimizer_table_covers_every_optimizer_name() -> None:
    covered = {p.values[0].name for p in optimizer_examples()}  # type: ignore[union-attr]
    assert covered == set(OPTIMIZERS)


# --- seeded dropout ---------------------------------------------------------------------


def dropout_network(seed: int = 0) -> Network:
    network = build_network(network_spec(dropout=0.5, hidden=[16, 16]), seed=seed)
    network.train()
    return network


def test_seeded_dropout_same_seed_draws_the_same_masks() -> None:
    first, second = dropout_network(seed=3), dropout_network(seed=3)
    x = inputs()
    for _ in range(3):
        assert torch.equal(first(x), second(x))


def test_seeded_dropout_draws_fresh_masks_on_each_call() -> None:
    network = dropout_network()
    x = inputs()
    assert not torch.equal(network(x), network(x))


def test_seeded_dropout_masks_come_from_the_network_generator() -> None:
    network = dropout_network()
    assert network.generator is not None
    state = network.generator.get_state()
    x = inputs()
    first = network(x)
    network.generator.set_state(state)
    assert torch.equal(network(x), first)


def test_dropout_differs_between_train_and_eval() -> None:
    network = dropout_network()
    x = inputs()
    assert not torch.equal(network(x), predict(network, x))


def test_dropout_in_eval_neither_masks_nor_advances_the_generator() -> None:
    network = dropout_network()
    assert network.generator is not None
    state = network.generator.get_state()
    x = inputs()
    first = predict(network, x)
    assert torch.equal(predict(network, x), first)
    assert torch.equal(network.generator.get_state(), state)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_seeded_dropout_zeroes_or_rescales_each_unit(p: float) -> None:
    owner = dropout_network()
    dropout = SeededDropout(p, owner)
    out = dropout(torch.ones(200, 50))
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1.0 / (1.0 - p)))
    assert abs(float((out == 0).float().mean()) - p) < 0.03
