"""The two engines: versions and pointers commit only once on disk; progress events do not
wait for the disk (a machine crash may lose the last few, a process crash none)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from service.storage.db.engine import make_engine


def _setting(url: str, query: str, *, wait_for_disk: bool) -> str:
    engine = make_engine(url, wait_for_disk=wait_for_disk)
    try:
        with engine.connect() as connection:
            return str(connection.exec_driver_sql(query).scalar())
    finally:
        engine.dispose()


def test_sqlite_progress_engine_skips_the_fsync_the_main_one_waits_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gradual.db'}"
    assert _setting(url, "PRAGMA synchronous", wait_for_disk=True) == "2"  # FULL
    assert _setting(url, "PRAGMA synchronous", wait_for_disk=False) == "1"  # NORMAL
    assert _setting(url, "PRAGMA journal_mode", wait_for_disk=False) == "wal"


def test_postgres_progress_engine_commits_asynchronously(postgres_url: str) -> None:
    assert _setting(postgres_url, "SHOW synchronous_commit", wait_for_disk=True) == "on"
    assert _setting(postgres_url, "SHOW synchronous_commit", wait_for_disk=False) == "off"
    # The URL's own options (here the test's schema) still apply.
    schema = _setting(postgres_url, "SHOW search_path", wait_for_disk=False)
    assert schema.startswith("gradual_test_")


def test_progress_events_are_visible_to_the_main_engine_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gradual.db'}"
    progress, main = make_engine(url, wait_for_disk=False), make_engine(url)
    try:
        with progress.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (a INTEGER)"))
            connection.execute(sa.text("INSERT INTO t VALUES (7)"))
        with main.connect() as connection:
            assert connection.execute(sa.text("SELECT a FROM t")).scalar() == 7
    finally:
        progress.dispose()
        main.dispose()
