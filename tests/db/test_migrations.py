"""The Alembic migrations, run for real on SQLite and PostgreSQL: up, down to base, up again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.storage.db.migrate import alembic_config, downgrade, upgrade
from service.storage.db.tables import Base

REGISTRY_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        postgres: str = request.getfixturevalue("postgres_url")
        return postgres
    return f"sqlite:///{tmp_path / 'gradual.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_registry_tables_cover_models_versions_and_events() -> None:
    assert {"models", "versions", "events"} <= REGISTRY_TABLES


def test_upgrade_creates_every_registry_table_at_head(url: str, engine: sa.Engine) -> None:
    upgrade(url)
    assert tables(engine) == REGISTRY_TABLES | {"alembic_version"}
    assert current_revision(engine) == head_revision(url)


def test_upgraded_schema_matches_the_orm_tables(url: str, engine: sa.Engine) -> None:
    upgrade(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_downgrade_to_base_drops_every_registry_table(url: str, engine: sa.Engine) -> None:
    upgrade(url)
    downgrade(url, "base")
    assert tables(engine) - {"alembic_version"} == set()
    assert current_revision(engine) is None


def test_upgrade_after_downgrade_recreates_the_schema(url: str, engine: sa.Engine) -> None:
    upgrade(url)
    downgrade(url, "base")
    upgrade(url)
    assert tables(engine) == REGISTRY_TABLES | {"alembic_version"}
    assert current_revision(engine) == head_revision(url)


def test_upgrade_twice_is_a_no_op(url: str, engine: sa.Engine) -> None:
    upgrade(url)
    upgrade(url)
    assert current_revision(engine) == head_revision(url)
