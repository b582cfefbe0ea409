"""The learning tests run small networks, which train fastest on one intra-op thread: with
torch's default of one thread per core, its workers spin against each other (and against
anything else on the machine) for matrices this small."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.config import Settings


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(torch_threads=1)
