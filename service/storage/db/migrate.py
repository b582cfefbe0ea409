"""Runs the Alembic migrations programmatically (the service does it at start).

Replicas that start together on PostgreSQL would otherwise run the same `CREATE TABLE`s at
once and all but one would fail (`pg_type_typname_nsp_index`): an advisory lock serializes
them, and whoever comes second finds the schema at head and has nothing left to do. SQLite
is one file of one deployment: it needs no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

import migrations
from service.storage.db.engine import make_engine

# pg_advisory_lock's key: any constant the deployment uses for nothing else ("gradual" in hex)
MIGRATION_LOCK = 0x6772616475616C


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["url"] = url
    return config


def upgrade(url: str, revision: str = "head") -> None:
    with serialized(url):
        command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    with serialized(url):
        command.downgrade(alembic_config(url), revision)


@contextmanager
def serialized(url: str) -> Iterator[None]:
    """Holds the database's migration lock (PostgreSQL) for the body; released on exit,
    or by the server when the process dies holding it (a session lock)."""
    if make_url(url).get_backend_name() != "postgresql":
        yield
        return
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                connection.commit()
    finally:
        engine.dispose()


def at_head(engine: Engine) -> bool:
    """Whether the schema is at the latest revision (read only: nothing is upgraded)."""
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    return current == head
