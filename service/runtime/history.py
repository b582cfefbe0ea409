"""A model's recorded past, for readers: its versions and events, read off the event loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from anyio import to_thread

from service.kinds import EventKind
from service.runtime.live import LiveModel
from service.runtime.notify import Notifier
from service.storage.db.tables import EventRow, VersionRow
from service.storage.registry import Registry

READ_WAIT_S = 10.0


class History:
    """Version rows and events from the registry; `live` names the model (404 when unknown)."""

    def __init__(
        self, registry: Registry, notifier: Notifier, live: Callable[[str], LiveModel]
    ) -> None:
        self.registry = registry
        self.notifier = notifier
        self.live = live

    async def written(self, name: str) -> None:
        """Returns once the model's queued history writes are done (or stopped on a failure):
        a reader after an answer sees what the answer said, e.g. the version a round made.
        At most `READ_WAIT_S` (a database outage holds the queue up to its own wait)."""
        recorder = self.live(name).recorder
        if recorder.behind is not None and recorder.behind.pending:
            await to_thread.run_sync(recorder.wait_written, READ_WAIT_S)

    async def versions(self, name: str) -> Sequence[VersionRow]:
        await self.written(name)
        return await to_thread.run_sync(self.registry.queries.versions, self.live(name).id)

    async def version(self, name: str, number: int) -> VersionRow:
        await self.written(name)
        return await to_thread.run_sync(self.registry.queries.version, self.live(name).row, number)

    async def events(
        self, name: str, since: int, *, kinds: Sequence[EventKind] | None = None, limit: int = 1000
    ) -> Sequence[EventRow]:
        await self.written(name)
        model_id = self.live(name).id
        return await to_thread.run_sync(
            lambda: self.registry.queries.events(model_id, since=since, kinds=kinds, limit=limit)
        )

    async def wait_for_events(self, name: str, timeout: float) -> None:
        """Returns when the model records an event, or after `timeout` seconds."""
        await self.notifier.wait(self.live(name).id, timeout)

    def listening(self, name: str) -> AbstractContextManager[None]:
        """While held, the model's writers wake `wait_for_events` (they skip it otherwise)."""
        return self.notifier.listening(self.live(name).id)
