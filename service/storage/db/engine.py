"""Engine construction: SQLite tuned for a service (WAL, foreign keys, busy timeout), or PG."""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, wait_for_disk: bool = True) -> Engine:
    """`wait_for_disk=False`: commits return before they are flushed to disk. A crash of our
    process loses none of them; a crash of the machine (or of the PostgreSQL server) may lose
    the last few, never corrupts the database."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", partial(_sqlite_pragmas, wait_for_disk=wait_for_disk))
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    if not wait_for_disk:
        event.listen(engine, "connect", _postgres_commit_without_flush)
    return engine


def _postgres_commit_without_flush(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("SET synchronous_commit TO OFF")  # for the session: committed below
    cursor.close()
    dbapi_connection.commit()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any, *, wait_for_disk: bool) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL + NORMAL: a commit is appended to the WAL without an fsync; the next FULL commit
    # (or checkpoint) flushes it with everything before it.
    cursor.execute(f"PRAGMA synchronous={'FULL' if wait_for_disk else 'NORMAL'}")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
