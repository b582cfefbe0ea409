"""`gradual check` and the same check at start: missing files, checksum mismatches, orphans.

A data directory is damaged by hand after a real service wrote it: one version's file
deleted, one's bytes flipped, orphan files and a folder of no model added. Every test runs on
the weight folder and on S3 (a real emulator process): the same damage, the same answers.
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
from service.storage.weightstore import WeightStorage
from tests.factories import checkpoint, labelled, model_body, predicted, rows
from tests.stores import STORES, exists, flip_last_byte, raw_write

PROBE = rows(5, seed=99)
pytestmark = pytest.mark.parametrize("store_kind", STORES)


def written(settings: Settings) -> tuple[list[float], dict[int, str], WeightStorage]:
    """A model with versions 1 (served), 2 and 3: v1's outputs, the objects by number, the store."""
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/models", json=model_body("m")).status_code == 201
        for seed in (1, 2):
            response = client.post("/v1/models/m/partial-fit", json=labelled(16, seed=seed))
            assert response.status_code == 200
            checkpoint(client, "m")
        served = predicted(client, "m", PROBE)
        hub = client.app.state.hub  # type: ignore[attr-defined]
        versions = hub.registry.queries.versions(hub.registry.model("m").id)
        files = {row.number: row.weights_path for row in versions}
    return served, files, hub.store


def damage(files: dict[int, str], store: WeightStorage) -> list[str]:
    """v2's object gone, v3's corrupted; returns the orphans added."""
    store.remove(files[2])
    flip_last_byte(store, files[3])
    folder = files[1].rpartition("/")[0]
    orphans = [f"{folder}/0badc0de.safetensors", f"{folder}/1234.tmp", "m99/x.safetensors"]
    for path in orphans:
        raw_write(store, path, b"not a checkpoint")
    return orphans


def run_check(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("GRADUAL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("GRADUAL_DATABASE_URL", settings.resolved_database_url)
    for key in ("weights_url", "s3_endpoint", "s3_access_key_id", "s3_secret_access_key"):
        value = getattr(settings, key)
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            monkeypatch.setenv(f"GRADUAL_{key.upper()}", secret() if secret else str(value))
    result = CliRunner().invoke(cli, ["check", "--grace", "0", *args])
    return result.exit_code, result.output


def test_check_reports_without_changing_anything_on_a_dry_run(
    start: Callable[..., TestClient], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, files, store = written(settings)
    orphans = damage(files, store)
    before = contents(settings.data_dir)
    code, output = run_check(settings, monkeypatch, "--dry-run")
    assert contents(settings.data_dir) == before  # not a byte, not a -wal file, not a mtime
    assert code == 1
    assert "m v2: missing" in output
    assert "m v3: corrupt" in output
    assert output.count("orphan") == 3
    assert "5 findings" in output
    assert all(exists(store, path) for path in orphans)


def contents(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_check_repairs_what_it_safely_can_and_is_then_consistent(
    start: Callable[..., TestClient], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, files, store = written(settings)
    orphans = damage(files, store)
    code, output = run_check(settings, monkeypatch)
    assert code == 1
    assert "(marked missing)" in output
    assert "(marked corrupt)" in output
    assert not any(exists(store, path) for path in orphans)
    assert exists(store, files[3])  # a corrupt file is kept, as evidence
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
    served, files, store = written(settings)
    orphans = damage(files, store)
    with caplog.at_level(logging.INFO, logger="gradual"):
        client = start()
    assert "consistency: m v2: missing" in caplog.text
    assert "consistency: m v3: corrupt" in caplog.text
    assert "3 versions and" in caplog.text
    assert not any(exists(store, path) for path in orphans)
    assert client.get("/readyz").status_code == 200
    assert predicted(client, "m", PROBE) == served


def test_a_model_whose_served_version_is_gone_is_a_503_and_the_service_still_starts(
    start: Callable[..., TestClient], settings: Settings
) -> None:
    _, files, store = written(settings)
    store.remove(files[1])  # served (and best): the model cannot load
    client = start()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["detail"]["failed"].keys() == {"m"}
    response = client.get("/v1/models/m")
    assert (response.status_code, response.json()["code"]) == (503, "model_unavailable")


def test_a_fresh_file_is_left_alone_within_the_grace_period(
    start: Callable[..., TestClient], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, files, store = written(settings)
    young = f"{files[1].rpartition('/')[0]}/being-written.safetensors"
    raw_write(store, young, b"a checkpoint whose row is about to commit")
    assert run_check(settings, monkeypatch, "--grace", "60")[0] == 0
    assert exists(store, young)


def test_a_version_whose_object_is_corrupted_is_refused_with_410(
    start: Callable[..., TestClient], settings: Settings
) -> None:
    _, files, store = written(settings)
    client = start()
    flip_last_byte(store, files[2])  # while the service runs: its read finds the damage
    refused = client.post("/v1/models/m/predict", json={"inputs": PROBE, "version": 2})
    assert (refused.status_code, refused.json()["code"]) == (410, "version_unavailable")
    assert "fails its checksum" in refused.json()["message"]
