"""Each parameter of the `training` section changes behaviour as the README documents.

Every test streams the same small overfitting problem (`overfitting_body` in the factories:
60 noisy rows of three blobs to a [64, 64] network, one round per call, validated on 200
noisy rows) to two models that differ in one parameter, and compares them over HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from service.config import Settings
from tests.factories import (
    batch,
    blobs,
    checkpoint,
    events,
    fit,
    head_outputs,
    log_loss,
    model_state,
    noisy,
    noisy_blobs,
    overfitting_body,
    predicted,
)

CLASSES = 3
X, Y = noisy_blobs(60, seed=1)
VALID_X, VALID_Y = noisy_blobs(200, seed=2)
_, CLEAN = blobs(60, seed=1)
TRAIN = batch(X, Y)
PROBE = VALID_X[:16].tolist()


def overfitting(client: TestClient, name: str, **training: Any) -> str:
    response = client.post("/v1/models", json=overfitting_body(name, **training))
    assert response.status_code == 201, response.text
    validation = client.post(f"/v1/models/{name}/validation", json=batch(VALID_X, VALID_Y))
    assert validation.status_code == 200, validation.text
    return name


def rounds(client: TestClient, name: str, count: int) -> list[dict[str, Any]]:
    """`count` partial-fit calls of the training rows (one round each while training)."""
    return [fit(client, name, TRAIN) for _ in range(count)]


def until_stopped(client: TestClient, name: str, limit: int = 30) -> int:
    """Streams the training rows until the model answers "stopped"; the calls it took."""
    for calls in range(1, limit + 1):
        if fit(client, name, TRAIN)["state"] == "stopped":
            return calls
    raise AssertionError(f"{name} still training after {limit} rounds")


def round_scores(client: TestClient, name: str, metric: str = "val_loss") -> list[float]:
    return [event["data"][metric] for event in events(client, name, "round")]


def checkpoint_scores(client: TestClient, name: str, metric: str = "val_loss") -> list[float]:
    return [event["data"][metric] for event in events(client, name, "checkpoint")]


def checkpoint_steps(client: TestClient, name: str) -> list[int]:
    listing = client.get(f"/v1/models/{name}/versions").json()["versions"]
    return [v["step"] for v in listing if v["reason"] == "improved"]


def stop_reason(client: TestClient, name: str) -> str | None:
    stops = events(client, name, "early_stop")
    return stops[-1]["data"]["reason"] if stops else None


# -- patience, min_delta, baseline, start_from ----------------------------------------------


def test_patience_is_the_number_of_rounds_without_improvement_before_a_stop(
    client: TestClient,
) -> None:
    for name, patience in (("short", 2), ("long", 5)):
        overfitting(client, name, patience=patience)
        until_stopped(client, name)
        losses = round_scores(client, name)
        best_round = int(np.argmin(losses))
        assert len(losses) - 1 - best_round == patience
        assert stop_reason(client, name) == "patience"
        assert model_state(client, name)["rounds_since_improvement"] == patience
    assert len(round_scores(client, "long")) - len(round_scores(client, "short")) == 3


def test_min_delta_makes_smaller_improvements_count_as_none(client: TestClient) -> None:
    overfitting(client, "any", patience=3)
    overfitting(client, "delta", patience=3, min_delta=0.05)
    until_stopped(client, "any")
    until_stopped(client, "delta")
    gains = {name: -np.diff(checkpoint_scores(client, name)) for name in ("any", "delta")}
    assert (gains["delta"] > 0.05).all()
    assert (gains["any"] < 0.05).any()  # improvements that min_delta refuses to count
    assert len(gains["delta"]) < len(gains["any"])


def test_unbeaten_baseline_stops_at_the_first_round_without_improvement(
    client: TestClient,
) -> None:
    overfitting(client, "plain", patience=3)
    overfitting(client, "baseline", patience=3, baseline=0.5)  # the loss never gets below ~0.85
    until_stopped(client, "plain")
    until_stopped(client, "baseline")
    plain, baseline = round_scores(client, "plain"), round_scores(client, "baseline")
    assert len(baseline) - 1 == int(np.argmin(baseline)) + 1  # the first round after its best
    assert len(plain) - 1 == int(np.argmin(plain)) + 3  # waited out its patience
    assert stop_reason(client, "baseline") == "patience"
    assert model_state(client, "baseline")["best_metric"] > 0.5


def test_start_from_leaves_warm_up_rounds_unmonitored(client: TestClient) -> None:
    overfitting(client, "cold")
    overfitting(client, "warm", start_from=9)  # steps 3 and 6 are warm-up; 9 is monitored
    rounds(client, "cold", 3)
    rounds(client, "warm", 3)
    assert checkpoint_steps(client, "cold") == [3, 6, 9]
    assert checkpoint_steps(client, "warm") == [9]
    assert len(round_scores(client, "warm")) == 3  # rounds are still evaluated and recorded


# -- thresholds -----------------------------------------------------------------------------


def test_stopping_threshold_stops_as_soon_as_the_metric_is_good_enough(
    client: TestClient,
) -> None:
    overfitting(client, "plain")
    overfitting(client, "enough", stopping_threshold=0.9)
    calls = until_stopped(client, "enough")
    rounds(client, "plain", calls)
    losses = round_scores(client, "enough")
    assert losses[-1] < 0.9 <= min(losses[:-1])
    assert stop_reason(client, "enough") == "stopping_threshold"
    enough = model_state(client, "enough")
    assert enough["best_metric"] == losses[-1]
    assert enough["served_version"] == enough["best_version"]  # the good-enough round is kept
    assert model_state(client, "plain")["state"] == "training"


def test_divergence_threshold_stops_as_soon_as_the_metric_is_hopeless(
    client: TestClient,
) -> None:
    overfitting(client, "plain")
    overfitting(client, "hopeless", divergence_threshold=1.05)  # the first round is ~1.02
    calls = until_stopped(client, "hopeless")
    rounds(client, "plain", calls)
    losses = round_scores(client, "hopeless")
    assert losses[-1] > 1.05 >= max(losses[:-1])
    assert stop_reason(client, "hopeless") == "divergence_threshold"
    assert model_state(client, "plain")["state"] == "training"


# -- restore_best, monitor and mode ---------------------------------------------------------


def test_restore_best_puts_the_head_back_to_the_best_version_at_a_stop(
    client: TestClient,
) -> None:
    for name, restore in (("restored", True), ("kept", False)):
        overfitting(client, name, patience=2, restore_best=restore)
        until_stopped(client, name)
    best = {name: model_state(client, name)["best_version"] for name in ("restored", "kept")}
    assert head_outputs(client, "restored", PROBE) == predicted(
        client, "restored", PROBE, best["restored"]
    )
    assert head_outputs(client, "kept", PROBE) != predicted(client, "kept", PROBE, best["kept"])


def test_monitor_val_accuracy_checkpoints_on_accuracy_gains(client: TestClient) -> None:
    overfitting(client, "accuracy", monitor="val_accuracy", patience=3)
    until_stopped(client, "accuracy")
    accuracies = round_scores(client, "accuracy", "val_accuracy")
    kept = checkpoint_scores(client, "accuracy", "val_accuracy")
    assert all(np.diff(kept) > 0)
    state = model_state(client, "accuracy")
    assert state["best_metric"] == max(accuracies) == kept[-1]
    served = client.get(f"/v1/models/accuracy/versions/{state['served_version']}").json()
    assert served["metrics"]["val_accuracy"] == state["best_metric"]


def test_mode_max_counts_a_falling_loss_as_no_improvement(client: TestClient) -> None:
    overfitting(client, "min", patience=3)
    overfitting(client, "max", patience=3, mode="max")
    calls = until_stopped(client, "max")
    rounds(client, "min", calls)
    losses = round_scores(client, "max")
    assert all(np.diff(losses) < 0)  # stopped while the loss was still falling
    assert len(checkpoint_scores(client, "max")) == 1  # only the first round, against nothing
    assert model_state(client, "max")["best_metric"] == losses[0]
    assert len(checkpoint_scores(client, "min")) == calls
    assert model_state(client, "min")["state"] == "training"


# -- rollback_tolerance ---------------------------------------------------------------------


def test_rollback_tolerance_sends_a_degraded_head_back_to_the_best(client: TestClient) -> None:
    wrong = batch(X, (CLEAN + 1) % CLASSES)  # every label wrong
    for name, tolerance in (("guarded", 0.2), ("unguarded", None)):
        overfitting(client, name, rollback_tolerance=tolerance)
        rounds(client, name, 4)
        for _ in range(4):
            fit(client, name, wrong)
    [rollback] = events(client, "guarded", "rollback")
    best = model_state(client, "guarded")["best_version"]
    assert rollback["data"]["reason"] == "degraded"
    assert rollback["data"]["score"] > 1.2 * rollback["data"]["best"]
    assert rollback["version"] == best
    assert head_outputs(client, "guarded", PROBE) == predicted(client, "guarded", PROBE, best)
    assert events(client, "unguarded", "rollback") == []
    assert max(round_scores(client, "unguarded")) > 1.2 * min(round_scores(client, "unguarded"))


# -- promote --------------------------------------------------------------------------------


def test_promote_best_serves_only_a_version_that_beats_the_served_one(client: TestClient) -> None:
    # After the minimum the buffer is swapped for rows with less noise: the overfit head beats
    # the stale best score on them, so it is checkpointed, yet the served version does better.
    easier_x, easier_clean = blobs(200, seed=3)
    easier_y = noisy(easier_clean, 0.15, CLASSES, seed=3)
    for name, promote in (("gated", "best"), ("eager", "latest")):
        overfitting(client, name, promote=promote, buffer_size=200)
        rounds(client, name, 9)
        client.post(f"/v1/models/{name}/validation", json=batch(easier_x, easier_y))
        rounds(client, name, 1)
    gated, eager = model_state(client, "gated"), model_state(client, "eager")
    newest = gated["best_version"]
    assert events(client, "gated", "checkpoint")[-1]["version"] == newest
    assert gated["served_version"] == newest - 1
    assert (eager["best_version"], eager["served_version"]) == (newest, newest)
    served_loss, newest_loss = (
        log_loss(predicted(client, "gated", easier_x.tolist(), v), easier_y)
        for v in (newest - 1, newest)
    )
    assert served_loss < newest_loss


def test_promote_latest_serves_every_checkpoint(client: TestClient) -> None:
    overfitting(client, "latest", promote="latest")
    versions = [answer["version"] for answer in rounds(client, "latest", 4)]
    checkpoints = [e["version"] for e in events(client, "latest", "checkpoint")]
    assert versions == checkpoints == [2, 3, 4, 5]
    assert [e["version"] for e in events(client, "latest", "promote")] == checkpoints


def test_promote_manual_never_serves_a_checkpoint_by_itself(client: TestClient) -> None:
    overfitting(client, "manual", promote="manual")
    answers = rounds(client, "manual", 4)
    assert [a["version"] for a in answers] == [1, 1, 1, 1]
    state = model_state(client, "manual")
    assert (state["served_version"], state["best_version"]) == (1, 5)
    assert events(client, "manual", "promote") == []


# -- drift ----------------------------------------------------------------------------------


def drifted_while_stopped(client: TestClient, name: str, **training: Any) -> None:
    """Stops `name` early, then streams the same rows with every label moved one class on,
    twice: drift is judged once `drift_min_rows` (100) rows have come since the stop."""
    overfitting(client, name, stopping_threshold=0.9, **training)
    until_stopped(client, name)
    moved = batch(X, (Y + 1) % CLASSES)  # one round's worth of rows
    assert fit(client, name, moved)["trained"] == 0
    assert events(client, name, "drift") == []  # 60 fresh rows: not enough to judge
    answer = fit(client, name, moved)
    # Not trained on; its answer shows the state after the drift check (resumed or not).
    assert answer["trained"] == 0


def test_resume_on_drift_false_records_drift_but_stays_stopped(client: TestClient) -> None:
    drifted_while_stopped(client, "resumes")
    drifted_while_stopped(client, "stays", resume_on_drift=False)
    assert len(events(client, "resumes", "drift")) == 1
    assert [e["data"]["reason"] for e in events(client, "resumes", "resume")] == ["drift"]
    assert model_state(client, "resumes")["state"] == "training"
    assert len(events(client, "stays", "drift")) == 1
    assert events(client, "stays", "resume") == []
    assert model_state(client, "stays")["state"] == "stopped"


def test_drift_tolerance_sets_how_much_worse_counts_as_drift(client: TestClient) -> None:
    drifted_while_stopped(client, "strict")
    drifted_while_stopped(client, "lenient", drift_tolerance=5.0)
    drift = events(client, "strict", "drift")[0]["data"]
    assert drift["score"] > 1.1 * drift["at_stop"]
    assert drift["score"] < 6.0 * drift["at_stop"]  # within the lenient model's tolerance
    assert events(client, "lenient", "drift") == []
    assert model_state(client, "lenient")["state"] == "stopped"


# -- keep_versions --------------------------------------------------------------------------


def test_keep_versions_archives_old_versions_but_keeps_served_and_best(
    client: TestClient, settings: Settings
) -> None:
    overfitting(client, "kept", promote="manual", keep_versions=2)
    rounds(client, "kept", 4)  # improvements: versions 2..5, best 5; served stays 1
    newest = [checkpoint(client, "kept") for _ in range(2)]  # by hand: 6 and 7
    state = model_state(client, "kept")
    ready = {1, state["best_version"], *newest}
    assert (state["served_version"], state["best_version"], newest) == (1, 5, [6, 7])
    listing = client.get("/v1/models/kept/versions").json()["versions"]
    status = {v["version"]: v["status"] for v in listing}
    assert status == {v: "ready" if v in ready else "archived" for v in range(1, 8)}
    files = list(Path(settings.weights_root).glob("m*/*.safetensors"))  # version files only
    assert len(files) == len(ready)
    archived = client.post("/v1/models/kept/predict", json={"inputs": PROBE, "version": 3})
    assert archived.status_code == 410
    for version in sorted(ready):
        predicted(client, "kept", PROBE, version)
