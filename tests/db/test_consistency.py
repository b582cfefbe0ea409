"""`gradual check` and the same check at start: missing files, checksum mismatches, orphans.

A data directory is damaged by hand after a real service wrote it: one version's file
deleted, one's bytes flipped, orphan files and a folder of no model added.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from service.app import create_app
from service.cli.main import app as cli
from service.config import Settings
from tests.factories import checkpoint, labelled, model_body, predicted, rows

PROBE = rows(5, seed=99)


def written(settings: Settings) -> tuple[list[float], dict[int, Path]]:
    """A model with versions 1 (served), 2 and 3; returns v1's outputs and the files by number."""
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/models", json=model_body("m")).status_code == 201
        for seed in (1, 2):
            response = client.post("/v1/models/m/partial-fit", json=labelled(16, seed=seed))
            assert response.status_code == 200
            checkpoint(client, "m")
        served = predicted(client, "m", PROBE)
        hub = client.app.state.hub  # type: ignore[attr-defined]
        versions = hub.registry.versions(hub.registry.model("m").id)
        files = {row.number: hub.store.root / row.weights_path for row in versions}
    return served, files


def damage(files: dict[int, Path], root: Path) -> list[Path]:
    """v2's file gone, v3's corrupted; returns the orphans added."""
    files[2].unlink()
    data = bytearray(files[3].read_bytes())
    data[-1] ^= 0xFF
    files[3].write_bytes(bytes(data))
    folder = files[1].parent
    orphans = [folder / "0badc0de.safetensors", folder / "1234.tmp", root / "m99" / "x.safetensors"]
    for path in orphans:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not a checkpoint")
    return orphans


def run_check(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("GRADUAL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GRADUAL_DATABASE_URL", settings.resolved_database_url)
    result = CliRunner().invoke(cli, ["check", "--grace", "0", *args])
    return result.exit_code, result.output


def test_check_reports_without_changing_anything_on_a_dry_run(
    start: Callable[..., TestClient], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, files = written(settings)
    orphans = damage(files, settings.weights_root)
    code, output = run_check(settings, monkeypatch, "--dry-run")
    assert code == 1
    assert "m v2: missing" in output
    assert "m v3: corrupt" in output
    assert output.count("orphan") == 3
    assert "5 findings" in output
    assert all(path.exists() for path in orphans)


def test_check_repairs_what_it_safely_can_and_is_then_consistent(
    start: Callable[..., TestClient], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, files = written(settings)
    orphans = damage(files, settings.weights_root)
    code, output = run_check(settings, monkeypatch)
    assert code == 1
    assert "(marked missing)" in output
    assert "(marked corrupt)" in output
    assert not any(path.exists() for path in orphans)
    assert files[3].exists()  # a corrupt file is kept, as evidence
    assert run_check(settings, monkeypatch) == (0, "1 versions, 4 files checked: consistent\n")
    client = start()
    statuses = [v["status"] for v in client.get("/v1/models/m/versions").json()["versions"]]
    assert statuses == ["ready", "missing", "corrupt"]
    refused = client.post("/v1/models/m/predict", json={"inputs": PROBE, "version": 2})
    assert (refused.status_code, refused.json()["code"]) == (410, "version_unavailable")
    assert predicted(client, "m", PROBE) == served


def test_the_service_runs_the_check_at_start(
    start: Callable[..., TestClient], settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    served, files = written(settings)
    orphans = damage(files, settings.weights_root)
    with caplog.at_level(logging.INFO, logger="gradual"):
        client = start()
    assert "consistency: m v2: missing" in caplog.text
    assert "consistency: m v3: corrupt" in caplog.text
    assert "3 versions and" in caplog.text
    assert not any(path.exists() for path in orphans)
    assert client.get("/readyz").status_code == 200
    assert predicted(client, "m", PROBE) == served


def test_a_model_whose_served_version_is_gone_is_a_503_and_the_service_still_starts(
    start: Callable[..., TestClient], settings: Settings
) -> None:
    _, files = written(settings)
    files[1].unlink()  # served (and best): the model cannot load
    client = start()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["detail"]["failed"].keys() == {"m"}
    response = client.get("/v1/models/m")
    assert (response.status_code, response.json()["code"]) == (503, "model_unavailable")


def test_a_fresh_file_is_left_alone_within_the_grace_period(
    start: Callable[..., TestClient], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, files = written(settings)
    young = files[1].parent / "being-written.safetensors"
    young.write_bytes(b"a checkpoint whose row is about to commit")
    monkeypatch.setenv("GRADUAL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GRADUAL_DATABASE_URL", settings.resolved_database_url)
    assert CliRunner().invoke(cli, ["check", "--grace", "60"]).exit_code == 0
    assert young.exists()
