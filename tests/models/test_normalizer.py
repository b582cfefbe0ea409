"""OnlineStandardizer: merged batch statistics equal one pass over all rows; predict moves none."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.network import build_network
from models.normalizer import OnlineStandardizer
from tests.models.examples import network_spec

FEATURES = 3

SPLITS = pytest.mark.parametrize(
    "sizes",
    [[1], [50], [1, 1, 1, 1], [2, 3, 5, 7], [64, 1, 17], [1, 99], [10] * 10],
    ids=lambda sizes: "+".join(map(str, sizes)),
)


def data(rows: int, *, offset: float = 0.0, seed: int = 0) -> np.ndarray:
    """float32 rows with unequal scales per feature, as a client would send them."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 10.0, 0.01])
    return (rng.normal(size=(rows, FEATURES)) * scales + offset).astype(np.float32)


def fed(batches: list[np.ndarray]) -> OnlineStandardizer:
    normalizer = OnlineStandardizer(FEATURES)
    for batch in batches:
        normalizer.update(torch.from_numpy(batch))
    return normalizer


def split(rows: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    return np.split(rows, np.cumsum(sizes)[:-1])


def statistics(normalizer: OnlineStandardizer) -> tuple[float, np.ndarray, np.ndarray]:
    count = float(normalizer.count)
    variance = (normalizer.m2 / count).numpy()
    return count, normalizer.mean.numpy(), variance


@SPLITS
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_merged_batches_match_numpy_over_the_concatenated_rows(
    sizes: list[int], offset: float
) -> None:
    rows = data(sum(sizes), offset=offset)
    count, mean, variance = statistics(fed(split(rows, sizes)))
    exact = rows.astype(np.float64)
    assert count == len(rows)
    np.testing.assert_allclose(mean, exact.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(variance, exact.var(axis=0), rtol=1e-9, atol=1e-15)


@SPLITS
def test_statistics_do_not_depend_on_how_rows_are_batched(sizes: list[int]) -> None:
    rows = data(sum(sizes))
    _, mean, variance = statistics(fed(split(rows, sizes)))
    _, one_mean, one_variance = statistics(fed([rows]))
    np.testing.assert_allclose(mean, one_mean, rtol=1e-12)
    np.testing.assert_allclose(variance, one_variance, rtol=1e-12)


def test_statistics_are_float64_buffers_saved_with_the_weights() -> None:
    normalizer = fed([data(5)])
    state = normalizer.state_dict()
    assert set(state) == {"count", "mean", "m2"}
    assert all(tensor.dtype == torch.float64 for tensor in state.values())
    assert list(normalizer.parameters()) == []  # the optimizer can never move them


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_forward_does_not_change_the_statistics(mode: str) -> None:
    normalizer = fed([data(20)])
    before = {k: v.clone() for k, v in normalizer.state_dict().items()}
    normalizer.train(mode == "train")
    normalizer(torch.from_numpy(data(7, offset=5.0, seed=1)))
    for name, tensor in normalizer.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_network_forward_in_train_mode_does_not_change_the_statistics() -> None:
    network = build_network(network_spec(), seed=0)
    assert network.normalizer is not None
    network.normalizer.update(torch.from_numpy(data(20)))
    before = {k: v.clone() for k, v in network.normalizer.state_dict().items()}
    network.train()
    network(torch.from_numpy(data(9, offset=3.0, seed=2)))
    for name, tensor in network.normalizer.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_forward_standardizes_the_rows_it_was_fed() -> None:
    rows = data(200)
    out = fed(split(rows, [50, 150]))(torch.from_numpy(rows)).double().numpy()
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-5)
    # rsqrt(var + EPS): the 0.01-scale feature comes out a hair under unit variance.
    np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-4)


def test_forward_keeps_the_input_dtype() -> None:
    normalizer = fed([data(10)])
    assert normalizer(torch.from_numpy(data(3))).dtype == torch.float32
    assert normalizer(torch.from_numpy(data(3)).double()).dtype == torch.float64


def test_forward_before_any_update_reads_every_feature_as_its_mean() -> None:
    x = torch.from_numpy(data(4)) * 736_000  # raw values never reach the network unscaled
    assert torch.equal(OnlineStandardizer(FEATURES)(x), torch.zeros_like(x))


def test_restore_inverts_standardize_and_is_the_identity_before_any_update() -> None:
    targets = torch.from_numpy(data(30)) * 1.7 + 41.0
    empty = OnlineStandardizer(FEATURES)
    assert torch.equal(empty.restore(targets), targets)
    fitted = fed([targets.numpy()])
    assert torch.allclose(fitted.restore(fitted.standardize(targets)), targets, atol=1e-4)
    assert abs(float(fitted.standardize(targets).mean())) < 1e-4


def test_constant_feature_is_centred_but_not_scaled() -> None:
    rows = data(30)
    rows[:, 1] = 7.0
    out = fed([rows])(torch.from_numpy(rows))
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, 1], torch.zeros(30))


def test_empty_batch_leaves_the_statistics_alone() -> None:
    normalizer = fed([data(6)])
    before = {k: v.clone() for k, v in normalizer.state_dict().items()}
    normalizer.update(torch.empty(0, FEATURES))
    for name, tensor in normalizer.state_dict().items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_update_does_not_mutate_its_input(dtype: torch.dtype) -> None:
    x = torch.from_numpy(data(12, offset=2.0)).to(dtype)
    original = x.clone()
    normalizer = fed([data(5)])
    normalizer.update(x)
    normalizer(x)
    assert torch.equal(x, original)
