"""Crash and replay with replay on: the replay buffer, its generator and the learning-rate
schedule come back from the recovery snapshot, so replaying the write-ahead log reproduces the
head bit for bit, and so does the next batch after the restart."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.config import Settings
from service.storage.wal import ModelLog
from tests.factories import checkpoint, crash_image, fit, model_body, model_state, numbered_batches

Start = Callable[..., TestClient]
REPLAYING = model_body(
    "m", dropout=0.2,
    training={
        "batch_size": 16, "holdout": 0.2, "eval_every": 2, "replay": 40, "replay_ratio": 1.5,
        "steps_per_batch": 2, "lr_schedule": "reduce_on_plateau", "lr_patience": 1,
        "promote": "latest", "patience": 1000, "rollback_tolerance": None,
    },
)  # fmt: skip


def on_disk(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings of an app whose data (SQLite file included) lies under `tmp_path / data`."""
    data = tmp_path / "data"
    return Settings(
        data_dir=data, database_url=f"sqlite:///{data / 'gradual.db'}", device="cpu",
        torch_threads=1, **overrides,
    )  # fmt: skip


def weights_sha256(client: TestClient) -> str:
    number = checkpoint(client, "m")
    sha: str = client.get(f"/v1/models/m/versions/{number}").json()["weights_sha256"]
    return sha


def test_crash_image_with_replay_restarts_and_trains_on_bit_for_bit(
    start: Start, tmp_path: Path
) -> None:
    """Ten batches make versions (each a snapshot); then `min_delta` stops improvements, so the
    last fourteen batches, whose steps draw replayed rows, live only in the log."""
    settings = on_disk(tmp_path, snapshot_every=1000)
    lines = numbered_batches(25, rows=12, seed=7)
    with TestClient(create_app(settings)) as original:
        assert original.post("/v1/models", json=REPLAYING).status_code == 201
        for line in lines[:10]:
            fit(original, "m", line)
        patched = original.patch("/v1/models/m/training", json={"min_delta": 100.0})
        assert patched.status_code == 200, patched.text
        for line in lines[10:-1]:
            fit(original, "m", line)
        image = crash_image(settings, tmp_path / "image")
        state = model_state(original, "m")
        fit(original, "m", lines[-1])
        after_next = weights_sha256(original)
    assert state["replay_rows"] == 40, "replay should be full"
    assert state["lr"] < 0.01, "the schedule should have lowered the rate"
    copy = start(image)
    assert model_state(copy, "m") == state
    fit(copy, "m", lines[-1])
    assert weights_sha256(copy) == after_next


DEFERRED = model_body(
    "m",
    training={
        "batch_size": 16, "holdout": 0.25, "eval_every": 1, "promote": "latest",
        "patience": 1000, "rollback_tolerance": None, "keep_versions": 2,
    },
)  # fmt: skip


def test_versions_after_the_snapshot_are_rederived_and_its_versions_never_pruned(
    start: Start, tmp_path: Path
) -> None:
    """With a long snapshot interval, the batches' versions commit but no snapshot follows
    them: a crash replays the log across them (found by log position, not written twice), and
    the versions the creation snapshot names keep their files although `keep_versions` is 2."""
    settings = on_disk(tmp_path, snapshot_interval_s=3600)
    lines = numbered_batches(16, rows=24, seed=11)
    with TestClient(create_app(settings)) as original:
        assert original.post("/v1/models", json=DEFERRED).status_code == 201
        for line in lines[:-1]:
            fit(original, "m", line)
        versions = original.get("/v1/models/m/versions").json()["versions"]
        image = crash_image(settings, tmp_path / "image")
        state = model_state(original, "m")
        fit(original, "m", lines[-1])
        after_next = weights_sha256(original)
    snapshots = list((tmp_path / "image" / "weights").rglob("snapshots/*"))
    assert len(snapshots) == 1, "only the creation snapshot: the batches' versions deferred it"
    assert len(versions) >= 6, "the stream should have made versions"
    status = {v["version"]: v["status"] for v in versions}
    assert status[1] == "ready", "the snapshot names version 1: its file must stay"
    assert list(status.values()).count("archived") >= 2, "keep_versions 2 should prune others"
    copy = start(image)
    assert model_state(copy, "m") == state
    assert copy.get("/v1/models/m/versions").json()["versions"] == versions
    fit(copy, "m", lines[-1])
    assert weights_sha256(copy) == after_next


def test_a_replay_that_meets_an_unexpected_error_marks_the_model_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A record that makes the executor fail with something other than a refusal (here a
    rollback record without its version, which no request can log) is a bug: the model is not
    served half-replayed but reported unavailable, and the traceback is logged at ERROR."""
    settings = on_disk(tmp_path)
    with TestClient(create_app(settings)) as original:
        assert original.post("/v1/models", json=model_body("m")).status_code == 201
        fit(original, "m", numbered_batches(1, rows=12, seed=3)[0])
    log = ModelLog(settings.wal_dir / "m1")
    log.append("rollback", {}, {})
    log.close()
    with caplog.at_level(logging.ERROR), TestClient(create_app(settings)) as restarted:
        answer = restarted.post("/v1/models/m/predict", json={"inputs": [[0.0] * 4]})
        assert answer.status_code == 503, answer.text
        assert answer.json()["code"] == "model_unavailable"
        assert "replay failed at record" in answer.json()["message"]
        failed = restarted.get("/readyz").json()["detail"]["failed"]
        assert "replay failed at record 2" in failed["m"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert any(isinstance(r.exc_info[1], KeyError) for r in failures if r.exc_info)
