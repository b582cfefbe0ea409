"""Rendezvous hashing, from tables: stable, balanced, and moving only what must move."""

from __future__ import annotations

from collections import Counter

import pytest

from service.streaming.rendezvous import assignment, balanced, owner, weight

MODELS = [f"model-{i}" for i in range(240)]


@pytest.mark.parametrize(
    ("model", "members", "expected"),
    [
        ("m", [], None),
        ("m", ["a"], "a"),
        ("m", ["a", "b", "c"], owner("m", ["c", "b", "a"])),  # order does not matter
    ],
)
def test_owner_of_a_model(model: str, members: list[str], expected: str | None) -> None:
    assert owner(model, members) == expected


def test_weights_are_the_same_in_every_process() -> None:
    # BLAKE2b, not hash(): these numbers hold on any host, any PYTHONHASHSEED
    assert weight("m", "a") == 0x7969AD061B9E49B5
    assert weight("m", "a") != weight("a", "m")


@pytest.mark.parametrize(("members", "least", "most"), [(2, 100, 140), (3, 62, 98), (4, 44, 76)])
def test_models_spread_evenly(members: int, least: int, most: int) -> None:
    names = [f"replica-{i}" for i in range(members)]
    counts = [len(models) for models in assignment(MODELS, names).values()]
    assert sum(counts) == len(MODELS)
    assert least <= min(counts), counts
    assert max(counts) <= most, counts


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_a_join_moves_only_models_to_the_newcomer(size: int) -> None:
    before = [f"r{i}" for i in range(size)]
    after = [*before, "newcomer"]
    moved = [m for m in MODELS if owner(m, before) != owner(m, after)]
    assert all(owner(m, after) == "newcomer" for m in moved)
    assert len(moved) == pytest.approx(len(MODELS) / (size + 1), rel=0.35)


@pytest.mark.parametrize("size", [2, 3, 5])
def test_a_leave_moves_only_the_leavers_models(size: int) -> None:
    before = [f"r{i}" for i in range(size)]
    after = before[1:]
    moved = [m for m in MODELS if owner(m, before) != owner(m, after)]
    assert moved == [m for m in MODELS if owner(m, before) == "r0"]


def test_every_member_is_listed_even_owning_nothing() -> None:
    assert assignment([], ["b", "a"]) == {"a": [], "b": []}
    assert assignment(["x"], ["a"]) == {"a": ["x"]}


@pytest.mark.parametrize(("models", "members"), [(24, 3), (24, 4), (25, 4), (7, 3), (240, 7)])
def test_balanced_gives_every_member_the_mean_within_one(models: int, members: int) -> None:
    names = [f"m{i:03d}" for i in range(models)]
    chosen = balanced(names, [f"r{i}" for i in range(members)])
    loads = Counter(chosen.values())
    assert sorted(chosen) == names
    assert max(loads.values()) - min(loads.values()) <= 1
    assert max(loads.values()) == -(-models // members)


def test_balanced_is_the_same_whatever_the_order_it_is_given() -> None:
    names = [f"m{i:02d}" for i in range(24)]
    assert balanced(names, ["a", "b", "c"]) == balanced(names[::-1], ["c", "a", "b"])


@pytest.mark.parametrize(("before", "after"), [(3, 4), (4, 3), (2, 3), (5, 6), (6, 5)])
def test_balanced_moves_about_one_in_n_models_on_a_join_or_a_leave(before: int, after: int) -> None:
    names = [f"m{i:03d}" for i in range(120)]
    old = balanced(names, [f"r{i}" for i in range(before)])
    new = balanced(names, [f"r{i}" for i in range(after)])
    moved = sum(old[m] != new[m] for m in names)
    assert moved <= 1.6 * len(names) / max(before, after), moved


def test_balanced_without_members_assigns_nothing() -> None:
    assert balanced(["m"], []) == {}
