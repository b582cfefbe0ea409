"""The early stopper, table-tested on score sequences (no torch)."""

from __future__ import annotations

import math

import pytest

from service.learning.early_stopping import EarlyStopper, StopperConfig, StopperState

NAN = math.nan
Config = StopperConfig


def run(config: StopperConfig, scores: list[float], start_step: int = 10) -> list[str]:
    """Feeds one score per round (10 steps apart) and spells each decision."""
    stopper = EarlyStopper(config)
    out = []
    for index, score in enumerate(scores):
        decision = stopper.update(score, start_step + 10 * index)
        out.append(
            "skip" if not decision.monitored
            else decision.stop or ("best" if decision.improved else "-")
        )  # fmt: skip
        if decision.stop:
            break
    return out


@pytest.mark.parametrize(
    ("config", "scores", "expected"),
    [
        (Config(patience=2), [1.0, 0.9, 0.95, 0.96], "best best - patience"),
        (Config(patience=3), [1.0, 0.9, 0.95, 0.96, 0.97], "best best - - patience"),
        (Config(patience=2, mode="max"), [0.5, 0.6, 0.55, 0.7], "best best - best"),
        (Config(patience=2, min_delta=0.05), [1.0, 0.97, 0.96], "best - patience"),
        (Config(patience=5), [1.0, NAN], "best non_finite"),
        (Config(patience=5), [1.0, math.inf], "best non_finite"),
        (Config(stopping_threshold=0.5), [1.0, 0.6, 0.4], "best best stopping_threshold"),
        (Config(divergence_threshold=3.0), [1.0, 2.0, 3.5], "best - divergence_threshold"),
        (Config(patience=2, start_from=25), [5.0, 5.0, 1.0, 1.1, 1.2], "skip skip best - patience"),
    ],
    ids=["patience", "longer-patience", "max-mode", "min-delta", "nan", "inf",
         "stopping-threshold", "divergence-threshold", "start-from"],
)  # fmt: skip
def test_decisions_follow_the_documented_order(
    config: StopperConfig, scores: list[float], expected: str
) -> None:
    assert run(config, scores) == expected.split()


def test_baseline_must_be_beaten_before_patience_resets() -> None:
    # Improving on itself but never below the baseline of 0.5: patience keeps counting
    # from the first round (Keras' semantics), so the first flat round stops it.
    without = run(StopperConfig(patience=3), [1.0, 0.9, 0.8, 0.8])
    with_baseline = run(StopperConfig(patience=3, baseline=0.5), [1.0, 0.9, 0.8, 0.8])
    assert without == ["best", "best", "best", "-"]
    assert with_baseline == ["best", "best", "best", "patience"]


def test_baseline_beaten_resets_patience() -> None:
    assert run(StopperConfig(patience=2, baseline=0.5), [1.0, 0.4, 0.45, 0.3]) == [
        "best", "best", "-", "best",
    ]  # fmt: skip


def test_state_round_trips_as_plain_data() -> None:
    stopper = EarlyStopper(StopperConfig(patience=2))
    for step, score in enumerate([1.0, 0.8, 0.9]):
        stopper.update(score, step)
    restored = EarlyStopper(
        StopperConfig(patience=2), StopperState.from_dict(stopper.state.to_dict())
    )
    assert restored.state == stopper.state
    assert restored.update(0.95, 10).stop == stopper.update(0.95, 10).stop == "patience"


def test_reset_forgets_the_best() -> None:
    stopper = EarlyStopper(StopperConfig(patience=1))
    stopper.update(0.1, 0)
    stopper.reset()
    assert stopper.update(5.0, 1).improved
