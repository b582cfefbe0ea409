"""What the registry tests share: a version to add, and a model to add it to (each test module
provides its own `registry`)."""

from __future__ import annotations

import pytest

from service.storage.changes import NewModel, NewVersion
from service.storage.registry import Registry
from service.storage.weights import StoredFile


def new_version(tag: str) -> NewVersion:
    return NewVersion(1, 8, {}, "test", None, StoredFile(f"m1/{tag}.safetensors", tag * 8, 1))


@pytest.fixture
def model_id(registry: Registry) -> int:
    model = NewModel("m", "classification", {}, {}, {}, 0)
    row, _ = registry.create_model(model, lambda _id: new_version("0"))
    return row.id
