"""The database fences owners: a per-model generation compared by every write of an owner.

Run on SQLite and PostgreSQL, on the real migrated schema. Version numbers are allocated
without races when two writers checkpoint at once (a unique constraint plus retry).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from service.errors import Fenced
from service.learning.recording import Pointers
from service.storage.db.engine import make_engine, make_sessionmaker
from service.storage.registry import Registry
from tests.db.conftest import new_version


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    url = database_url
    engine = make_engine(url)
    yield Registry(make_sessionmaker(engine))
    engine.dispose()


def test_claim_takes_the_generation_only_for_a_newer_token(
    registry: Registry, model_id: int
) -> None:
    assert registry.claim(model_id, 5) is True
    assert registry.claim(model_id, 4) is False
    assert registry.claim(model_id, 5) is False
    assert registry.model("m").generation == 5


def test_an_owner_whose_generation_was_taken_commits_nothing(
    registry: Registry, model_id: int
) -> None:
    registry.claim(model_id, 1)
    registry.claim(model_id, 2)  # a newer owner took over
    pointers = Pointers(control={"state": "training"})
    with pytest.raises(Fenced):
        registry.add_version(model_id, new_version("a"), pointers=pointers, event_data={}, fence=1)
    with pytest.raises(Fenced):
        registry.add_event(model_id, "round", None, {}, seq=3, fence=1)
    with pytest.raises(Fenced):
        registry.commit_snapshot(
            model_id, file=new_version("s").file, seq=3, applied_through="1-0", fence=1
        )
    assert [v.number for v in registry.queries.versions(model_id)] == [1]
    assert registry.model("m").snapshot_path is None


def test_the_current_owner_commits_its_snapshot_and_stream_position(
    registry: Registry, model_id: int
) -> None:
    registry.claim(model_id, 7)
    file = new_version("s").file
    registry.commit_snapshot(model_id, file=file, seq=42, applied_through="99-1", fence=7)
    row = registry.model("m")
    assert (row.snapshot_path, row.snapshot_seq, row.applied_through) == (file.path, 42, "99-1")


def test_concurrent_checkpoints_get_distinct_version_numbers(
    registry: Registry, model_id: int
) -> None:
    pointers = Pointers(control={"state": "training"})

    def add(tag: str) -> int:
        row = registry.add_version(model_id, new_version(tag), pointers=pointers, event_data={})
        return row.number

    with ThreadPoolExecutor(4) as pool:
        numbers = list(pool.map(add, [f"{i:x}" for i in range(8)]))
    assert sorted(numbers) == list(range(2, 10))


def test_snapshot_columns_exist_after_the_migration(registry: Registry) -> None:
    with registry._sessions() as session:
        columns = {c["name"] for c in sa.inspect(session.get_bind()).get_columns("models")}
    assert {"generation", "snapshot_path", "snapshot_seq", "applied_through"} <= columns
