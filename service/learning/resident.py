"""The latest versions' states kept in device memory, so a rollback to one reads no file."""

from __future__ import annotations

from service.learning.head import HeadState

RESIDENT_VERSIONS = 4


class ResidentVersions:
    """Oldest first; the best version is always kept (rounds roll back to it)."""

    def __init__(self, version: int, state: HeadState) -> None:
        self._states: dict[int, HeadState] = {version: state}

    def keep(self, version: int, state: HeadState, *, best: int) -> None:
        self._states[version] = state
        for old in list(self._states)[:-RESIDENT_VERSIONS]:
            if old != best:
                del self._states[old]

    def get(self, version: int) -> HeadState | None:
        return self._states.get(version)
