"""What the registry tests share: a migrated database on SQLite and on PostgreSQL, a version
to add, and a model to add it to (each test module builds its own `registry` on the URL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.storage.changes import NewModel, NewVersion
from service.storage.db.migrate import upgrade
from service.storage.registry import Registry
from service.storage.weights import StoredFile


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at the schema's head: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'gradual.db'}"
    upgrade(url)
    return url


def new_version(tag: str) -> NewVersion:
    return NewVersion(1, 8, {}, "test", None, StoredFile(f"m1/{tag}.safetensors", tag * 8, 1))


@pytest.fixture
def model_id(registry: Registry) -> int:
    model = NewModel("m", "classification", {}, {}, {}, 0)
    row, _ = registry.create_model(model, lambda _id: new_version("0"))
    return row.id
