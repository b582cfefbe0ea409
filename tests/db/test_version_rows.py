"""Version rows: pruning reports how many versions keep a file, and a row committed without
waiting for the disk reads back at once and is settled by a commit that waits.

Run on SQLite and PostgreSQL, on the real migrated schema.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.learning.recording import Pointers
from service.storage.db.engine import make_engine, make_sessionmaker
from service.storage.registry import Registry
from tests.db.conftest import new_version


@pytest.fixture
def registry(database_url: str) -> Iterator[Registry]:
    url = database_url
    engine, relaxed = make_engine(url), make_engine(url, wait_for_disk=False)
    yield Registry(make_sessionmaker(engine), make_sessionmaker(relaxed))
    engine.dispose()
    relaxed.dispose()


def add(registry: Registry, model_id: int, tag: str, *, wait_for_disk: bool = True) -> int:
    pointers = Pointers({"state": "training"})
    row = registry.add_version(
        model_id, new_version(tag), pointers=pointers, event_data={}, wait_for_disk=wait_for_disk
    )
    return row.number


def test_pruning_within_keep_archives_nothing_and_counts_the_ready_versions(
    registry: Registry, model_id: int
) -> None:
    add(registry, model_id, "1")
    archived = registry.archive_old_versions(model_id, keep=5, protected=set())
    assert (archived.paths, archived.ready) == ([], 2)


def test_pruning_beyond_keep_counts_the_protected_versions_it_keeps(
    registry: Registry, model_id: int
) -> None:
    for tag in "12345":
        add(registry, model_id, tag)  # versions 2..6 beside version 1
    archived = registry.archive_old_versions(model_id, keep=2, protected={1})
    assert sorted(archived.paths) == ["m1/1.safetensors", "m1/2.safetensors", "m1/3.safetensors"]
    assert archived.ready == 3  # 5, 6 and the protected 1
    status = {v.number: v.status for v in registry.queries.versions(model_id)}
    assert [n for n, s in sorted(status.items()) if s == "ready"] == [1, 5, 6]


def test_a_version_that_did_not_wait_for_the_disk_reads_back_and_settles(
    registry: Registry, model_id: int
) -> None:
    number = add(registry, model_id, "1", wait_for_disk=False)
    assert number == 2
    assert registry.queries.version(registry.model("m"), number).weights_path == "m1/1.safetensors"
    registry.settle(model_id, seq=7)
    assert registry.model("m").snapshot_seq == 7
    assert add(registry, model_id, "2") == 3  # numbering goes on across both connections
