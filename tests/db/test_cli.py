"""`gradual migrate` (and `python -m service migrate`) bring a fresh data directory to head."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.storage.db.migrate import alembic_config
from service.storage.db.tables import Base

ROOT = Path(__file__).resolve().parents[2]


def gradual_command() -> list[str]:
    beside_python = Path(sys.executable).parent / "gradual"
    found = str(beside_python) if beside_python.exists() else shutil.which("gradual")
    assert found, "the `gradual` console script is not installed (pip install -e .)"
    return [found]


def run_migrate(command: list[str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    """Runs `command migrate` in a clean environment that names only the data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADUAL_")}
    env |= {"GRADUAL_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*command, "migrate"],
        env=env,
        cwd=data_dir.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def revision_of(database: Path) -> tuple[str | None, set[str]]:
    engine = sa.create_engine(f"sqlite:///{database}")
    try:
        with engine.connect() as connection:
            revision = MigrationContext.configure(connection).get_current_revision()
        return revision, set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(gradual_command(), id="gradual"),
        pytest.param([sys.executable, "-m", "service"], id="python-m-service"),
    ],
)
def test_migrate_creates_the_sqlite_file_at_head(tmp_path: Path, command: list[str]) -> None:
    data_dir = tmp_path / "data"
    result = run_migrate(command, data_dir)
    assert result.returncode == 0, result.stderr
    assert "database at head" in result.stdout
    revision, tables = revision_of(data_dir / "gradual.db")
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert revision == head
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
