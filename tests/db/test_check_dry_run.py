"""`gradual check --dry-run` writes nothing, and a check of nothing is no all-clear."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.main import app as cli


def test_a_dry_run_refuses_a_data_directory_that_does_not_exist_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GRADUAL_DATABASE_URL", raising=False)
    monkeypatch.setenv("GRADUAL_DATA_DIR", "elsewhere")
    result = CliRunner().invoke(cli, ["check", "--dry-run"])
    assert result.exit_code == 2
    assert f"error: no data directory at {tmp_path / 'elsewhere'}" in result.output
    assert list(tmp_path.iterdir()) == []
