"""Checkpoints: encode → decode is bit for bit, and a head restored from one replays exactly.

The replay property is what versioning rests on: a head loaded from a checkpoint and trained
on a batch ends with the very bits the original head reached on that batch, dropout masks and
augmentation noise included (they come from the checkpointed generator).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from safetensors.torch import save as save_tensors

from models.spec import OptimizerSpec
from service.errors import VersionUnavailable
from service.learning.checkpoint import Checkpoint
from service.learning.head import HeadState, TrainingHead
from service.learning.trainer import Limits, fit
from service.learning.training_config import TrainingConfig
from service.storage.weights import decode, encode
from service.storage.weightstore import WeightStorage
from tests.models.examples import inputs, network_spec, optimizer_examples, targets
from tests.stores import STORES, flip_last_byte

CPU = torch.device("cpu")
SPEC = network_spec(task="classification", outputs=3, hidden=[5, 4], dropout=0.25)
TRAINING = TrainingConfig.model_validate(
    {"batch_size": 4, "augment_noise": 0.1, "steps_per_batch": 1}
)
LIMITS = Limits(max_weight_abs=1e6, max_grad_norm=1e6)
EVERY_OPTIMIZER = pytest.mark.parametrize("optimizer", optimizer_examples())


def new_head(optimizer: OptimizerSpec, *, seed: int = 0) -> TrainingHead:
    return TrainingHead(SPEC, optimizer, seed=seed, device=CPU)


def learn(head: TrainingHead, optimizer: OptimizerSpec, *, batch: int) -> None:
    """Two mini-batch steps on the numbered batch, through the real trainer."""
    x, y = inputs(8, seed=batch), targets(SPEC, 8, seed=batch + 100)
    fit(head, x, y, training=TRAINING, optimizer=optimizer, limits=LIMITS)


def trained_head(optimizer: OptimizerSpec, *, seed: int = 0) -> TrainingHead:
    head = new_head(optimizer, seed=seed)
    learn(head, optimizer, batch=1)
    return head


def restored_head(optimizer: OptimizerSpec, checkpoint: Checkpoint) -> TrainingHead:
    """A head built from another seed, so everything it knows must come from the checkpoint."""
    head = new_head(optimizer, seed=12345)
    head.load_checkpoint(decode(encode(checkpoint)))
    return head


def assert_same_tensors(a: dict[Any, Any], b: dict[Any, Any]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert isinstance(b[key], torch.Tensor), key
            assert value.dtype == b[key].dtype, key
            assert value.shape == b[key].shape, key
            assert torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def assert_same_optimizer(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["state"].keys() == b["state"].keys()
    for index, entries in a["state"].items():
        assert_same_tensors(entries, b["state"][index])
    # JSON has no tuples: betas come back as lists, with the same numbers.
    assert json.dumps(a["param_groups"], sort_keys=True) == json.dumps(
        b["param_groups"], sort_keys=True
    )


def assert_same_state(a: HeadState, b: HeadState) -> None:
    assert_same_tensors(a.network, b.network)
    assert_same_optimizer(a.optimizer, b.optimizer)
    assert torch.equal(a.rng, b.rng)
    assert (a.step, a.samples_seen) == (b.step, b.samples_seen)


@EVERY_OPTIMIZER
def test_encode_then_decode_is_bit_for_bit(optimizer: OptimizerSpec) -> None:
    checkpoint = trained_head(optimizer).checkpoint({"reason": "test", "metrics": {"loss": 0.5}})
    decoded = decode(encode(checkpoint))
    assert_same_tensors(checkpoint.network, decoded.network)
    assert_same_optimizer(checkpoint.optimizer, decoded.optimizer)
    assert decoded.rng.dtype == checkpoint.rng.dtype
    assert torch.equal(decoded.rng, checkpoint.rng)
    assert decoded.meta == checkpoint.meta


@EVERY_OPTIMIZER
def test_checkpoint_of_an_untrained_head_round_trips(optimizer: OptimizerSpec) -> None:
    checkpoint = new_head(optimizer).checkpoint()
    decoded = decode(encode(checkpoint))
    assert_same_tensors(checkpoint.network, decoded.network)
    assert_same_optimizer(checkpoint.optimizer, decoded.optimizer)
    assert torch.equal(decoded.rng, checkpoint.rng)


@pytest.mark.parametrize("name", ["adam", "adamw", "adagrad", "rmsprop"])
def test_optimizer_step_count_survives_encode_decode(name: str) -> None:
    optimizer = OptimizerSpec(name=name)  # type: ignore[arg-type]
    decoded = decode(encode(trained_head(optimizer).checkpoint()))
    steps = [entries["step"] for entries in decoded.optimizer["state"].values()]
    assert len(steps) == len(SPEC.hidden) * 2 + 2
    assert all(torch.equal(step, torch.tensor(2.0)) for step in steps)


def test_checkpoint_carries_the_normalizer_statistics() -> None:
    decoded = decode(encode(trained_head(OptimizerSpec()).checkpoint()))
    assert float(decoded.network["normalizer.count"]) == 8.0
    assert decoded.network["normalizer.mean"].dtype == torch.float64


@EVERY_OPTIMIZER
def test_head_loaded_from_checkpoint_replays_training_bit_for_bit(
    optimizer: OptimizerSpec,
) -> None:
    original = trained_head(optimizer)
    restored = restored_head(optimizer, original.checkpoint())
    assert_same_state(restored.state(), original.state())
    learn(original, optimizer, batch=2)
    learn(restored, optimizer, batch=2)
    assert_same_state(restored.state(), original.state())


def test_replay_check_is_not_vacuous_a_fresh_head_diverges() -> None:
    optimizer = OptimizerSpec()
    original, stranger = trained_head(optimizer), new_head(optimizer, seed=12345)
    learn(original, optimizer, batch=2)
    learn(stranger, optimizer, batch=2)
    pairs = zip(original.network.parameters(), stranger.network.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


@EVERY_OPTIMIZER
def test_load_state_undoes_training_so_the_batch_replays_identically(
    optimizer: OptimizerSpec,
) -> None:
    head = trained_head(optimizer)
    before = head.state()
    learn(head, optimizer, batch=2)
    after = head.state()
    head.load_state(before)
    assert_same_state(head.state(), before)
    learn(head, optimizer, batch=2)
    assert_same_state(head.state(), after)


def test_state_is_a_copy_that_training_cannot_change() -> None:
    optimizer = OptimizerSpec()
    head = trained_head(optimizer)
    state = head.state()
    kept = HeadState(
        network=cloned(state.network),
        optimizer={
            "state": {i: cloned(e) for i, e in state.optimizer["state"].items()},
            "param_groups": state.optimizer["param_groups"],
        },
        rng=state.rng.clone(),
        step=state.step,
        samples_seen=state.samples_seen,
    )
    learn(head, optimizer, batch=2)
    assert_same_state(state, kept)


def cloned(tensors: dict[Any, Any]) -> dict[Any, Any]:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}


def test_checkpoint_meta_restores_the_counters() -> None:
    optimizer = OptimizerSpec()
    original = trained_head(optimizer)
    restored = restored_head(optimizer, original.checkpoint())
    assert (restored.step, restored.samples_seen) == (2, 8)


@pytest.mark.parametrize("store_kind", STORES)
def test_store_write_then_read_is_bit_for_bit(weight_store: WeightStorage) -> None:
    checkpoint = trained_head(OptimizerSpec()).checkpoint()
    file = weight_store.write(7, checkpoint)
    read = weight_store.read(file.path, file.sha256)
    assert_same_tensors(checkpoint.network, read.network)
    assert_same_optimizer(checkpoint.optimizer, read.optimizer)
    assert torch.equal(read.rng, checkpoint.rng)


@pytest.mark.parametrize("store_kind", STORES)
def test_store_refuses_a_file_that_fails_its_checksum(weight_store: WeightStorage) -> None:
    file = weight_store.write(7, new_head(OptimizerSpec()).checkpoint())
    flip_last_byte(weight_store, file.path)
    with pytest.raises(VersionUnavailable, match="checksum"):
        weight_store.read(file.path, file.sha256)


@pytest.mark.parametrize("store_kind", STORES)
def test_store_refuses_a_missing_file(weight_store: WeightStorage) -> None:
    file = weight_store.write(7, new_head(OptimizerSpec()).checkpoint())
    weight_store.remove(file.path)
    with pytest.raises(VersionUnavailable, match="missing"):
        weight_store.read(file.path, file.sha256)


@pytest.mark.parametrize("store_kind", STORES)
def test_store_keeps_the_newest_two_snapshots_and_reads_back_the_latest(
    weight_store: WeightStorage,
) -> None:
    head = trained_head(OptimizerSpec())
    for seq in (1, 2, 3):
        weight_store.write_snapshot(7, seq, head.checkpoint())
    found = weight_store.latest_snapshot(7)
    assert found is not None
    assert found[0] == 3
    assert_same_tensors(head.checkpoint().network, found[1].network)
    kept = sorted(o.path for o in weight_store.objects())
    assert kept == [f"m7/snapshots/{seq:020d}.safetensors" for seq in (2, 3)]


@pytest.mark.parametrize("store_kind", STORES)
def test_store_prunes_fenced_snapshots_but_those_it_keeps(weight_store: WeightStorage) -> None:
    head = new_head(OptimizerSpec())
    files = [weight_store.write_fenced_snapshot(7, seq, 4, head.checkpoint()) for seq in (1, 2)]
    weight_store.prune_snapshots(7, keep={files[1].path})
    assert [o.path for o in weight_store.objects()] == [files[1].path]
    weight_store.remove_model(7)
    assert list(weight_store.objects()) == []


def test_decode_refuses_safetensors_that_are_not_a_checkpoint() -> None:
    foreign = save_tensors({"weight": torch.zeros(2)}, metadata={"format": "pt"})
    with pytest.raises(VersionUnavailable, match="not a Gradual checkpoint"):
        decode(foreign)
