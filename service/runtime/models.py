"""Every model this process holds, by name, and how that set follows the database.

One process holds every model it has. With several replicas, a replica holds the models it
owns (their live state) and follows the others: their served versions and committed state,
re-read from the database when an owner commits or announces a change."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence

from anyio import to_thread

from service.errors import ModelNotFound, ModelUnavailable, VersionUnavailable
from service.runtime.assembly import Assembler
from service.runtime.live import LiveModel
from service.storage.db.tables import ModelRow
from service.storage.registry import Registry

log = logging.getLogger("gradual.hub")


class LiveModels:
    def __init__(self, registry: Registry, assembly: Assembler) -> None:
        self.registry = registry
        self.assembly = assembly
        self.failed: dict[str, str] = {}  # known but not loaded: answered 503, not 404
        self.creating: set[str] = set()  # names being created: not yet in the database
        self._models: dict[str, LiveModel] = {}

    def live(self, name: str) -> LiveModel:
        try:
            return self._models[name]
        except KeyError:
            if name in self.failed:
                raise ModelUnavailable(name, self.failed[name]) from None
            raise ModelNotFound(name) from None

    def all(self) -> list[LiveModel]:
        return sorted(self._models.values(), key=lambda model: model.name)

    def has(self, name: str) -> bool:
        return name in self._models

    def taken(self, name: str) -> bool:
        """Whether `name` is held or being created."""
        return name in self._models or name in self.creating

    def add(self, live: LiveModel) -> None:
        self._models[live.name] = live

    def remove(self, name: str) -> None:
        live = self._models.pop(name, None)
        if live is not None:
            self.assembly.versions.forget(live.id)

    async def load_all(self) -> None:
        """Brings every model back: its latest snapshot, then the log after it (run at start)."""
        for row in await to_thread.run_sync(self.registry.models):
            try:
                self._models[row.name] = await to_thread.run_sync(self.assembly.restore, row)
            except (VersionUnavailable, ModelUnavailable, OSError) as exc:
                self.failed[row.name] = str(exc)
                log.error("model %s not loaded: %s", row.name, exc)

    async def take_over(self, name: str, fence: int) -> LiveModel:
        """Becomes the model's owner: its committed state, fresh from the database."""
        live = await to_thread.run_sync(self.assembly.restore, self.registry.model(name))
        live.own(fence)
        self._models[name] = live
        return live

    async def discover(self, name: str) -> None:
        """Loads a model another replica created, if the database has it (else: a 404 later)."""
        try:
            row = await to_thread.run_sync(self.registry.model, name)
        except ModelNotFound:
            return
        await self.refresh([row], owned=set(), force={name}, prune=False)

    async def step_down(self, name: str, *, owned: Collection[str]) -> None:
        """Drops what an owner computed but could not commit: back to the committed state.
        `owned`: the models this replica still owns (their live state is not reloaded)."""
        rows = await to_thread.run_sync(self.registry.models)
        await self.refresh(rows, owned=set(owned) - {name}, force={name})

    async def refresh(
        self, rows: Sequence[ModelRow], *, owned: set[str], force: Collection[str] = (),
        prune: bool = True,
    ) -> None:  # fmt: skip
        """Keeps the models this replica does not own in step with the database."""
        for row in rows:
            live = self._models.get(row.name)
            if row.name in owned or row.name in self.creating:
                continue
            if live is not None and live.fence is not None and row.name not in force:
                continue  # an owner's copy (one being taken over, too): never a follower's

            if live is None or row.name in force or _moved(live, row):
                try:
                    restored = await to_thread.run_sync(self.assembly.restore, row)
                except (VersionUnavailable, OSError) as exc:
                    log.warning("model %s not refreshed: %s", row.name, exc)
                    continue
                # a takeover may have installed the owner's copy while this one loaded
                if self._models.get(row.name) is live:
                    self._models[row.name] = restored
        names = {row.name for row in rows} | owned | self.creating
        for gone in set(self._models) - names if prune else ():
            self.remove(gone)


def _moved(live: LiveModel, row: ModelRow) -> bool:
    """Whether the owner committed a newer state (or served version) than this copy holds."""
    if row.snapshot_seq is not None and row.snapshot_seq != live.snapshot_seq:
        return True
    return row.served_version != live.status.served_version
